// The player's page (recordings/lecture.html): playback speed, frame-by-frame stepping (buttons
// and the keys « , » and « . », as common players do) and the end of the consultation's link.
// Progressive enhancement: without this file the browser's own controls still play and seek.
"use strict";

(function () {
  var box = document.getElementById("lecteur");
  if (!box) {
    return;
  }
  var video = box.querySelector("video");
  var tools = document.getElementById("commandes");
  var speed = document.getElementById("vitesse");
  var shown = document.getElementById("image-courante");
  var expiredNotice = document.getElementById("lien-expire");
  var fps = Number(box.dataset.fps) || 25;
  var expiresAt = Date.parse(box.dataset.expiresAt || "");
  // currentTime is a float: a time written as n / fps may read back a hair under it.
  var EPSILON = 1e-3;

  function frameIndex() {
    return Math.floor(video.currentTime * fps + EPSILON);
  }

  function showFrame() {
    shown.textContent = String(frameIndex());
  }

  function step(frames) {
    video.pause();
    var last = Number.isFinite(video.duration) ? Math.floor(video.duration * fps) - 1 : Infinity;
    var target = Math.min(Math.max(frameIndex() + frames, 0), last);
    // The middle of the frame: never on the edge where rounding could show its neighbour.
    video.currentTime = (target + 0.5) / fps;
  }

  function expire(interrupted) {
    if (!expiredNotice.hidden) {
      return;
    }
    video.pause();
    if (interrupted && !(Date.now() >= expiresAt)) {
      // The link stopped before its time: the consultation was closed or access withdrawn.
      document.getElementById("lien-expire-titre").textContent = "La lecture s'est interrompue";
      document.getElementById("lien-expire-texte").textContent =
        "Le lien de lecture n'est plus accepté (visionnage clos, habilitation retirée ou " +
        "enregistrement indisponible). Demandez un nouveau visionnage : un nouveau motif vous " +
        "sera demandé et inscrit au journal des accès.";
    }
    box.hidden = true;
    video.removeAttribute("src");
    video.load();
    expiredNotice.hidden = false;
    document.getElementById("nouveau-visionnage").focus();
  }

  tools.hidden = false;
  speed.addEventListener("change", function () {
    video.playbackRate = Number(speed.value);
  });
  video.addEventListener("ratechange", function () {
    var option = speed.querySelector('option[value="' + video.playbackRate + '"]');
    if (option) {
      speed.value = option.value;
    }
  });
  document.getElementById("image-precedente").addEventListener("click", function () {
    step(-1);
  });
  document.getElementById("image-suivante").addEventListener("click", function () {
    step(1);
  });
  document.addEventListener("keydown", function (event) {
    var target = event.target;
    var typing = target instanceof HTMLElement &&
      (target.isContentEditable || /^(INPUT|SELECT|TEXTAREA)$/.test(target.tagName));
    if (typing || event.ctrlKey || event.metaKey || event.altKey || expiredNotice.hidden === false) {
      return;
    }
    if (event.key === "," || event.key === ".") {
      event.preventDefault();
      step(event.key === "." ? 1 : -1);
    }
  });
  ["seeked", "timeupdate", "loadeddata"].forEach(function (name) {
    video.addEventListener(name, showFrame);
  });
  video.addEventListener("error", function () {
    expire(true);
  });
  if (video.error) {
    // It failed while the page was still loading, before this file ran.
    expire(true);
  }
  if (Number.isFinite(expiresAt)) {
    // A timeout alone can be late in a background tab: checked every few seconds as well.
    var check = window.setInterval(function () {
      if (Date.now() >= expiresAt) {
        window.clearInterval(check);
        expire(false);
      }
    }, 5000);
    window.setTimeout(function () {
      expire(false);
    }, Math.max(expiresAt - Date.now(), 0));
  }
})();
