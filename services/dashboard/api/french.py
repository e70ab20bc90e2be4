"""The APIs' details in French, for the person reading the page.

The vault, reporting and ingest APIs word their problem details in English (for the operators,
the docks and the logs); the dashboard shows every one of them in French. ``in_french``
translates a detail (exactly, or by a pattern keeping its values; a refusal that joins several
reasons with « ; » is translated reason by reason); ``field_message`` says a 422's field error
in French, by pydantic's error type when the API gives it. A detail this module does not know
is never shown in English: ``said`` answers ``UNKNOWN`` and logs it, for someone to add it
here (tests/test_french_details.py reads the APIs' source and fails on any detail without a
translation). The law's words stay as it writes them: motif, destinataires, habilitation,
effacement, procédure judiciaire, enregistrement, station d'accueil."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

_logger = logging.getLogger("temoin.dashboard.french")

UNKNOWN = (
    "Le service a donné une précision qui n'est pas encore traduite en français ; "
    "elle a été consignée pour l'équipe technique."
)

EXACT: dict[str, str] = {
    # shared/errors.py and shared/web.py: the request itself.
    "the request was cut short": "La requête a été interrompue avant sa fin.",
    "The server met an unexpected error; it has been logged.": (
        "Le service a rencontré une erreur inattendue ; elle a été consignée."
    ),
    "Not Found": "Cette adresse n'existe pas.",
    "Method Not Allowed": "Cette action n'est pas possible à cette adresse.",
    "text may not contain NUL or a lone UTF-16 surrogate": (
        "Le texte contient un caractère invalide (caractère nul ou demi-caractère UTF-16)."
    ),
    "this route is for Témoin's own services, with the SERVICE_TOKEN they share: check that "
    "ingest, vault and reporting are given the same one": (
        "Cette adresse est réservée aux services de Témoin entre eux (SERVICE_TOKEN) : "
        "vérifiez qu'ingest, vault et reporting reçoivent le même."
    ),
    # shared/auth.py: tokens.
    "token has no subject (claim 'sub'): its issuer must set it": (
        "Le jeton ne nomme personne (claim 'sub') : le fournisseur d'identité doit le renseigner."
    ),
    "the identity provider's keys cannot be fetched (AUTH_JWKS_URL): retry later": (
        "Les clés du fournisseur d'identité sont injoignables (AUTH_JWKS_URL) : "
        "réessayez plus tard."
    ),
    "not a token (a JWT): send the access token the identity provider issued, as "
    "'Authorization: Bearer <access token>'": (
        "Ce n'est pas un jeton (JWT) : il faut le jeton d'accès délivré par le fournisseur "
        "d'identité, en 'Authorization: Bearer <jeton>'."
    ),
    "sign in again to get a new token from the identity provider": (
        "reconnectez-vous pour obtenir un nouveau jeton du fournisseur d'identité"
    ),
    # shared/clips.py, shared/inputs.py: a clip's metadata (a station d'accueil's).
    "not a media type (type/subtype; parameter=value)": (
        "Ce n'est pas un type de média (type/sous-type; paramètre=valeur)."
    ),
    "an integer header holds digits only (RFC 9110)": (
        "Un en-tête entier ne contient que des chiffres (RFC 9110)."
    ),
    "the instant is out of range": "L'instant est hors des limites.",
    "an instant is written as RFC 3339 text: 2026-05-30T08:00:00+02:00": (
        "Un instant s'écrit en texte RFC 3339 : 2026-05-30T08:00:00+02:00."
    ),
    "ended_at must be after started_at": "La fin de la vidéo doit être après son début.",
    "give GPS coordinates, a declared address, or both": (
        "Donnez les coordonnées GPS, une adresse déclarée, ou les deux."
    ),
    "give both latitude and longitude, or neither": (
        "Donnez la latitude et la longitude, ou aucune des deux."
    ),
    "sha256 must be 64 lower-case hex digits": (
        "L'empreinte sha256 s'écrit en 64 chiffres hexadécimaux minuscules."
    ),
    "an Ed25519 public key is 32 bytes": "Une clé publique Ed25519 fait 32 octets.",
    "not valid base64": "Ce n'est pas du base64 valide.",
    "the instant must lie between the years 1900 and 2999 (UTC)": (
        "L'instant doit se situer entre les années 1900 et 2999 (UTC)."
    ),
    # Ingest: a station d'accueil's credentials and uploads.
    "the assertion's timestamp is not an RFC 3339 instant with its time zone": (
        "L'horodatage de l'assertion de la station d'accueil n'est pas un instant RFC 3339 "
        "avec son fuseau horaire."
    ),
    "the assertion's signature does not verify with the station's registered key: the dock "
    "must sign with the key file written when it was registered": (
        "La signature de l'assertion ne correspond pas à la clé enregistrée de la station "
        "d'accueil : elle doit signer avec le fichier de clé écrit lors de son enregistrement."
    ),
    "this station was revoked: a maire or responsable must register the dock again "
    "(`temoin station register`)": (
        "Cette station d'accueil a été révoquée : le maire ou un responsable doit "
        "l'enregistrer à nouveau (`temoin station register`)."
    ),
    "assertion already used (replay): sign a new one, with a fresh nonce": (
        "Cette assertion a déjà servi (rejeu) : la station d'accueil doit en signer une nouvelle."
    ),
    "this route takes a docking station's token, not a person's: a dock gets one from POST "
    "/v1/stations/token (`temoin dock` does it by itself)": (
        "Cette adresse attend le jeton d'une station d'accueil, pas celui d'une personne "
        "(POST /v1/stations/token ; `temoin dock` le fait de lui-même)."
    ),
    "this token's station is unknown or revoked: a maire or responsable must register the "
    "dock again (`temoin station register`)": (
        "La station d'accueil de ce jeton est inconnue ou révoquée : le maire ou un "
        "responsable doit l'enregistrer à nouveau (`temoin station register`)."
    ),
    "get a new one with a freshly signed assertion (POST /v1/stations/token; `temoin dock` "
    "does it by itself)": (
        "la station d'accueil doit en obtenir un nouveau avec une assertion fraîchement "
        "signée (POST /v1/stations/token ; `temoin dock` le fait de lui-même)"
    ),
    "the body differs from its Upload-Checksum: not kept": (
        "Le contenu ne correspond pas à son Upload-Checksum : il n'a pas été conservé."
    ),
    "the vault is unavailable: keep the clip and retry later": (
        "Le coffre est indisponible : gardez la vidéo et réessayez plus tard."
    ),
    "the vault cannot be used now: keep the clip and retry later": (
        "Le coffre ne peut pas être utilisé pour l'instant : gardez la vidéo et réessayez "
        "plus tard."
    ),
    "the vault cannot be reached: keep the clip and retry later": (
        "Le coffre est injoignable : gardez la vidéo et réessayez plus tard."
    ),
    "this upload was rejected (SHA-256 mismatch): upload the clip again": (
        "Ce versement a été refusé (empreinte SHA-256 différente) : versez la vidéo à nouveau."
    ),
    "this upload expired before it was finished: upload the clip again": (
        "Ce versement a expiré avant sa fin : versez la vidéo à nouveau."
    ),
    "the clip ends in the future: check the camera's clock": (
        "La vidéo se termine dans le futur : vérifiez l'horloge de la caméra."
    ),
    "the vault failed on this request (logged there): keep the clip": (
        "Le coffre a échoué sur cette demande (c'est consigné) : gardez la vidéo."
    ),
    "the vault answered without the registered recording: no receipt": (
        "Le coffre a répondu sans l'enregistrement enregistré : pas de récépissé."
    ),
    "the vault registered something else: no receipt": (
        "Le coffre a enregistré autre chose : pas de récépissé."
    ),
    "the clip's SHA-256 differs from the declared one: nothing was stored; upload it again": (
        "L'empreinte SHA-256 de la vidéo diffère de celle déclarée : rien n'a été conservé ; "
        "versez-la à nouveau."
    ),
    "Upload-Metadata has no `metadata` key (the clip's metadata as JSON)": (
        "Upload-Metadata n'a pas de clé `metadata` (les métadonnées de la vidéo en JSON)."
    ),
    "Upload-Length is required (Upload-Defer-Length is not supported)": (
        "Upload-Length est obligatoire (Upload-Defer-Length n'est pas pris en charge)."
    ),
    "Upload-Offset is required": "Upload-Offset est obligatoire.",
    "the `metadata` value is not JSON": "La valeur de `metadata` n'est pas du JSON.",
    "Upload-Checksum: the digest is not base64": (
        "Upload-Checksum : l'empreinte n'est pas en base64."
    ),
    "another request is writing to this upload: retry in a moment": (
        "Une autre demande écrit dans ce versement : réessayez dans un instant."
    ),
    "no such upload": "Ce versement n'existe pas.",
    "this request's claim on the upload ran out and another request took it over: "
    "nothing of this PATCH was kept; ask where the upload is (HEAD) and resume": (
        "Cette demande a perdu la main sur le versement, reprise par une autre demande : rien "
        "de cet envoi (PATCH) n'a été conservé ; demandez où en est le versement (HEAD) et "
        "reprenez."
    ),
    "the body was cut short; nothing of it was kept": (
        "Le contenu a été interrompu ; rien n'en a été conservé."
    ),
    # Reporting.
    "give both start and end, or a year": "Donnez le début et la fin, ou une année.",
    "no such finalised report": "Ce rapport finalisé n'existe pas.",
    "who signs the letter? You have no responsable's agent record in this organisation: give "
    "signatory.name (and signatory.title), or let the responsable finalise": (
        "Qui signe la lettre ? Vous n'avez pas de fiche d'agent responsable dans cette "
        "organisation : indiquez le nom (et la qualité) du signataire, ou laissez le "
        "responsable finaliser."
    ),
    "the period is empty or inverted: end must be on or after start": (
        "La période est vide ou inversée : la fin doit être le jour du début ou après."
    ),
    "a report covers at most three years": "Un rapport couvre au plus trois ans.",
    "no such organisation": "Cette organisation n'existe pas.",
    "its évaluation was sent with it": (
        "son évaluation a été envoyée avec lui et ne peut plus être modifiée"
    ),
    "it cannot be finalised again": "il ne peut pas être finalisé une seconde fois",
    # Vault: the audit trail.
    "until must be after since": "La fin doit être après le début.",
    "no sequenced entry with that id": "Aucune entrée du journal ne porte cet identifiant.",
    "second must be at least first": "La seconde taille doit être au moins la première.",
    "no signed tree head of that size": "Aucune tête d'arbre signée n'a cette taille.",
    "the entry is not in that tree head yet: ask for a later head": (
        "L'entrée n'est pas encore dans cette tête d'arbre : demandez-en une plus récente."
    ),
    "need 0 < first <= second": "Il faut 0 < première taille <= seconde.",
    "that head predates checkpoints: ask for a later one": (
        "Cette tête d'arbre est antérieure aux points de contrôle : demandez-en une plus récente."
    ),
    "that head predates checkpoints: cosign a later one": (
        "Cette tête d'arbre est antérieure aux points de contrôle : cosignez-en une plus récente."
    ),
    "the cosignature does not verify over this checkpoint": (
        "La cosignature ne correspond pas à ce point de contrôle."
    ),
    "the cosignature is dated in the future: check the witness's clock": (
        "La cosignature est datée dans le futur : vérifiez l'horloge du témoin."
    ),
    # Vault: the directory (annuaire).
    "organisation not found": "Cette organisation n'existe pas.",
    "a commune is listed twice": "Une commune figure deux fois.",
    "agent not found": "Cet agent n'existe pas.",
    "another agent already has this identity-provider subject": (
        "Un autre agent a déjà cet identifiant auprès du fournisseur d'identité."
    ),
    "an inactive agent cannot be habilité": "Un agent désactivé ne peut pas être habilité.",
    "this agent already has an active habilitation": "Cet agent a déjà une habilitation en cours.",
    "habilitation not found": "Cette habilitation n'existe pas.",
    "this habilitation is already withdrawn": "Cette habilitation est déjà retirée.",
    "camera not found": "Cette caméra n'existe pas.",
    "no such agent in this organisation": "Cet agent n'existe pas dans cette organisation.",
    "this agent is inactive": "Cet agent est désactivé.",
    "ends_at must be after starts_at": "La fin doit être après le début.",
    "the camera is already assigned over part of this period": (
        "La caméra est déjà attribuée sur une partie de cette période."
    ),
    "assignment not found": "Cette attribution n'existe pas.",
    "this assignment has already ended": "Cette attribution est déjà terminée.",
    "station not found": "Cette station d'accueil n'existe pas.",
    "this public key is already registered": "Cette clé publique est déjà enregistrée.",
    "this station is already revoked": "Cette station d'accueil est déjà révoquée.",
    "a commune is already served by another organisation": (
        "Une commune est déjà desservie par une autre organisation."
    ),
    "matricule or subject already in use": ("Ce matricule ou cet identifiant est déjà utilisé."),
    "subject already in use": "Cet identifiant est déjà utilisé.",
    "the new end overlaps a later assignment": (
        "La nouvelle fin empiète sur une attribution ultérieure."
    ),
    # Vault: procedures and extractions.
    "extraction for training needs anonymised copies, which Témoin cannot make yet: no "
    "extraction for a `formation` procedure": (
        "L'extraction pour la formation demande des copies anonymisées, que Témoin ne sait pas "
        "encore faire : pas d'extraction pour une procédure de formation."
    ),
    "a recording is extracted for training only as an approved anonymised copy (R241-12): "
    "give `derivative_id`": (
        "Un enregistrement n'est extrait pour la formation que sous la forme d'une copie "
        "anonymisée approuvée (article R241-12) : choisissez cette copie."
    ),
    "an anonymised copy is extracted for a `formation` procedure only": (
        "Une copie anonymisée ne s'extrait que pour une action de formation."
    ),
    "this anonymised copy is not a copy of that recording": (
        "Cette copie anonymisée n'est pas une copie de cet enregistrement."
    ),
    "only an approved anonymised copy can be extracted for training: have it reviewed": (
        "Seule une copie anonymisée approuvée peut être extraite pour la formation : "
        "faites-la vérifier d'abord."
    ),
    # Vault: anonymised copies for training (issue 18).
    "no such anonymised copy": "Cette copie anonymisée n'existe pas.",
    "an anonymised copy is made for training only: within a `formation` procedure": (
        "Une copie anonymisée ne se demande que pour la formation, dans une procédure de formation."
    ),
    "this is an anonymised copy: a copy is made from the original recording only": (
        "Ceci est déjà une copie anonymisée : une copie se fait à partir de l'enregistrement "
        "original seulement."
    ),
    "attach the recording to the formation procedure before asking for its anonymised copy": (
        "Rattachez l'enregistrement à la procédure de formation avant d'en demander une copie "
        "anonymisée."
    ),
    "an anonymised copy of this recording is already being made: wait for it, or cancel it": (
        "Une copie anonymisée de cet enregistrement est déjà en cours de fabrication : "
        "attendez-la, ou annulez-la."
    ),
    "this anonymised copy is no longer being made: nothing to cancel": (
        "Cette copie anonymisée n'est plus en cours de fabrication : il n'y a rien à annuler."
    ),
    "this anonymised copy was erased with its recording": (
        "Cette copie anonymisée a été effacée avec son enregistrement."
    ),
    "this anonymised copy is not made yet: nothing to view": (
        "Cette copie anonymisée n'est pas encore faite : il n'y a rien à visionner."
    ),
    "only an anonymised copy waiting for review can be approved or rejected": (
        "Seule une copie anonymisée à vérifier peut être approuvée ou rejetée."
    ),
    "view the anonymised copy (open a consultation of it) before reviewing it": (
        "Visionnez la copie anonymisée avant de l'approuver ou de la rejeter."
    ),
    "this procedure is closed: no more extractions for it": (
        "Cette procédure est close : plus aucune extraction n'est possible pour elle."
    ),
    "attach the recording to the procedure before extracting it": (
        "Rattachez l'enregistrement à la procédure avant de l'extraire."
    ),
    "this recording was erased": "Cet enregistrement a été effacé.",
    "this recording failed its integrity check: no copy can be made": (
        "Cet enregistrement a échoué au contrôle d'intégrité : aucune copie ne peut en être faite."
    ),
    "no such procedure": "Cette procédure n'existe pas.",
    "no such recording": "Cet enregistrement n'existe pas.",
    "this procedure is closed": "Cette procédure est close.",
    "this recording was erased at the end of its retention": (
        "Cet enregistrement a été effacé à la fin de sa durée de conservation."
    ),
    "this recording is already attached to the procedure": (
        "Cet enregistrement est déjà rattaché à la procédure."
    ),
    "this recording is not attached to the procedure": (
        "Cet enregistrement n'est pas (ou plus) rattaché à cette procédure."
    ),
    "this procedure is already closed": "Cette procédure est déjà close.",
    "a procedure of that type and reference exists": (
        "Une procédure de ce type et de cette référence existe déjà."
    ),
    # Vault: recordings, consultations, the media.
    "no such consultation": "Cette consultation n'existe pas.",
    "this recording failed its integrity check: it cannot be served": (
        "Cet enregistrement a échoué au contrôle d'intégrité : il ne peut pas être servi."
    ),
    "this recording failed its integrity check: it cannot be viewed": (
        "Cet enregistrement a échoué au contrôle d'intégrité : il ne peut pas être visionné."
    ),
    "its wrapped data key fails authentication": ("Sa clé de chiffrement ne s'authentifie pas."),
    "open a new consultation for a new one "
    "(POST /v1/organisations/{org_id}/recordings/{recording_id}/consultations)": (
        "ouvrez une nouvelle consultation pour en obtenir une nouvelle"
    ),
    "no such camera in the station's organisation": (
        "Cette caméra n'existe pas dans l'organisation de la station d'accueil."
    ),
    "the camera was assigned to nobody when recording started: give the wearer": (
        "La caméra n'était attribuée à personne au début de l'enregistrement : indiquez le porteur."
    ),
    "no such agent in the station's organisation": (
        "Cet agent n'existe pas dans l'organisation de la station d'accueil."
    ),
    "this station is unknown or revoked in the vault's directory: a maire or responsable must "
    "register the dock again (`temoin station register`)": (
        "Cette station d'accueil est inconnue ou révoquée dans l'annuaire : le maire ou un "
        "responsable doit l'enregistrer à nouveau (`temoin station register`)."
    ),
    "this consultation was closed: open a new one": (
        "Cette consultation a été close : ouvrez-en une nouvelle."
    ),
    "this consultation has expired: open a new one": (
        "Cette consultation a expiré : ouvrez-en une nouvelle."
    ),
    "a wearer views a recording only for one of the purposes of loi 2021-646 art. 45: give "
    "`purpose`": (
        "Un porteur ne visionne un enregistrement que pour l'une des finalités de l'article 45 "
        "de la loi 2021-646 : choisissez-la."
    ),
    "a wearer views only their own recordings": (
        "Un porteur ne visionne que ses propres enregistrements."
    ),
    "a maire or responsable may allow it (the organisation's wearer_access, "
    "PUT /v1/organisations/{org_id}; loi 2021-646 art. 45)": (
        "le maire ou un responsable peut l'autoriser dans les réglages de l'organisation "
        "(loi 2021-646, article 45)"
    ),
    # Sealed objects (shared/sealing.py): a damaged recording.
    "sealed object shorter than its header": "L'objet scellé est plus court que son en-tête.",
    "not a Témoin sealed object": "Ce n'est pas un objet scellé de Témoin.",
    "invalid chunk size": "Taille de bloc invalide.",
    "sealed object has the wrong length (truncated or extended)": (
        "L'objet scellé n'a pas la bonne longueur (tronqué ou allongé)."
    ),
    "sealed data failed authentication": "Les données scellées ne s'authentifient pas.",
    "data key failed authentication (wrong key-encryption key?)": (
        "La clé de chiffrement ne s'authentifie pas (mauvaise clé de chiffrement de clés ?)."
    ),
    # Signed notes (shared/notes.py): a witness's cosignature.
    "a signature line starts with an em dash and a space": (
        "Une ligne de signature commence par un tiret cadratin et une espace."
    ),
    "malformed signature line": "Ligne de signature mal formée.",
    "signature line: not base64": "Ligne de signature : pas en base64.",
    "signature line: too short": "Ligne de signature : trop courte.",
    "not a cosignature/v1": "Ce n'est pas une cosignature/v1.",
    "a note holds no control character but newlines": (
        "Une note ne contient aucun caractère de contrôle hormis les retours à la ligne."
    ),
    "a note ends with a newline": "Une note se termine par un retour à la ligne.",
    "a note's signatures follow a blank line": (
        "Les signatures d'une note suivent une ligne vide."
    ),
    "a note has from 1 to 64 signature lines": ("Une note a de 1 à 64 lignes de signature."),
    "a checkpoint's text ends with a newline": (
        "Le texte d'un point de contrôle se termine par un retour à la ligne."
    ),
    "a checkpoint has an origin, a size, a root hash, no empty line": (
        "Un point de contrôle a une origine, une taille, une empreinte racine, sans ligne vide."
    ),
    "a checkpoint's size is a decimal number without leading zero": (
        "La taille d'un point de contrôle est un nombre décimal sans zéro en tête."
    ),
    "a checkpoint's root hash is base64": (
        "L'empreinte racine d'un point de contrôle est en base64."
    ),
    "a checkpoint's root hash is 32 bytes": (
        "L'empreinte racine d'un point de contrôle fait 32 octets."
    ),
    "a head's previous head is smaller than itself": (
        "La tête d'arbre précédente d'une tête est plus petite qu'elle-même."
    ),
    "the checkpoint is not signed by the log's key": (
        "Le point de contrôle n'est pas signé par la clé du journal."
    ),
    "a Témoin checkpoint has two extension lines: time and previous": (
        "Un point de contrôle de Témoin a deux lignes d'extension : l'heure et la tête précédente."
    ),
    "writer keys are Ed25519 keys of type 0x01": (
        "Les clés d'écriture sont des clés Ed25519 de type 0x01."
    ),
}

_ROLE = {"habilite": "habilité", "prefecture": "préfecture"}
_STATUS = {
    # cameras
    "active": "en service",
    "out_of_service": "hors service",
    "retired": "retirée",
    # uploads
    "open": "en cours",
    "completing": "en cours d'achèvement",
    "complete": "terminé",
    "rejected": "refusé",
    "expired": "expiré",
}
_DEPENDENCY = {"database": "La base de données", "object store": "Le stockage des vidéos"}
_TOKEN = {"token": "Le jeton", "station token": "Le jeton de la station d'accueil"}


def _status(value: str) -> str:
    return _STATUS.get(value, value)


def _token(value: str) -> str:
    return _TOKEN.get(value, f"Le jeton ({value})")


def _then(value: str) -> str:
    """A clause a pattern keeps: said in French if known, else kept (a value)."""
    return _sentence(in_french(value) or value, end=False)


def _field_names(value: str) -> str:
    return ", ".join(_field_of(name.strip()) for name in value.split(","))


def _field_of(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[0] in ("body", "query", "path", "header") else name


Render = str | Callable[[dict[str, str]], str]

# English wording with {values} (any text), and its French: a template, or a function of the
# values for those whose values are themselves words.
_PATTERNS: list[tuple[str, Render]] = [
    # shared/errors.py, shared/web.py
    ("Invalid value for: {names}", lambda v: f"Valeur incorrecte : {_field_names(v['names'])}."),
    ("not ready: {names}", "Pas prêt : {names}."),
    (
        "the {dependency} is unavailable for a moment: retry later",
        lambda v: (
            f"{_DEPENDENCY.get(v['dependency'], v['dependency'])} est momentanément "
            "indisponible : réessayez plus tard."
        ),
    ),
    ("a JSON body is limited to {size} bytes", "Un contenu JSON est limité à {size} octets."),
    ("query.{name} takes one value", "Le paramètre {name} ne prend qu'une valeur."),
    (
        "{field}: text may not contain NUL or a lone UTF-16 surrogate",
        "{field} : le texte contient un caractère invalide (caractère nul ou demi-caractère "
        "UTF-16).",
    ),  # fmt: skip
    ("Input should be {names}", lambda v: f"Choisissez : {v['names'].replace(' or ', ' ou ')}."),
    (
        "a report's days lie between {first} and {last}",
        "Les jours d'un rapport sont compris entre {first} et {last}.",
    ),  # fmt: skip
    # shared/access.py: refusals, which say why and what to do.
    (
        "this action needs one of the roles {roles}",
        lambda v: (
            f"Cette action demande l'un des rôles {_roles(v['roles'])}."
            if "," in v["roles"]
            else f"Cette action demande le rôle {_roles(v['roles'])}."
        ),
    ),
    (
        "this token's roles are: {roles}. If you should hold one of them, the identity "
        "provider's administrator must add it to the token (claim {claim})",
        lambda v: (
            f"Les rôles de votre jeton sont : "
            f"{'aucun' if v['roles'] == 'none' else _roles(v['roles'])}. Si vous devez avoir "
            "l'un d'eux, l'administrateur du fournisseur d'identité doit l'ajouter à votre "
            f"jeton (claim {v['claim']})."
        ),
    ),
    (
        "this token's subject {subject} has no agent record in organisation {organisation}: "
        "{who} must register them as an agent{granted} (POST {agents}, with subject "
        "{subject2}){then}",
        lambda v: (
            f"L'identifiant {v['subject']} n'a aucune fiche d'agent dans l'organisation "
            f"{v['organisation']} : {_who(v['who'])} doit l'enregistrer comme agent"
            f"{_granted(v['granted'])} dans l'annuaire"
            + (", puis le responsable doit l'habiliter" if v["then"] else "")
            + "."
        ),
    ),
    (
        "the agent record of {subject} in organisation {organisation} is deactivated: {who} "
        'must reactivate it (PATCH {agents}/{agent}, "active": true)',
        lambda v: (
            f"La fiche d'agent de {v['subject']} dans l'organisation {v['organisation']} "
            f"est désactivée : {_who(v['who'])} doit la réactiver dans l'annuaire."
        ),
    ),
    (
        "{subject} holds no active habilitation in organisation {organisation}: the "
        "responsable must designate them (R241-12) (POST {agents}/{agent}/habilitations)",
        "{subject} n'a aucune habilitation en cours dans l'organisation {organisation} : le "
        "responsable doit l'habiliter (article R241-12 du code de la sécurité intérieure).",
    ),
    (
        "the agent record of {subject} in organisation {organisation} does not hold the role "
        "{role}: {who} must add it to its roles (PATCH {agents}/{agent})",
        lambda v: (
            f"La fiche d'agent de {v['subject']} dans l'organisation {v['organisation']} "
            f"n'a pas le rôle {_roles(v['role'])} : {_who(v['who'])} doit l'ajouter à ses rôles "
            "dans l'annuaire."
        ),
    ),
    (
        "this token names no organisation (claim {claim}): the roles responsable, agent and "
        "habilite act inside one; the identity provider's administrator must add the claim",
        "Votre jeton ne désigne aucune organisation (claim {claim}) : les rôles responsable, "
        "agent et habilité s'exercent dans une organisation ; l'administrateur du fournisseur "
        "d'identité doit ajouter ce claim.",
    ),
    (
        "this token names no organisation (claim {claim}): the identity provider's "
        "administrator must add it, with the organisation's id",
        "Votre jeton ne désigne aucune organisation (claim {claim}) : l'administrateur du "
        "fournisseur d'identité doit l'ajouter, avec l'identifiant de l'organisation.",
    ),
    (
        "organisation not found: this token acts for organisation {organisation}",
        "Organisation introuvable : votre jeton agit pour l'organisation {organisation}.",
    ),
    (
        "this préfecture token names no département (claim {claim}): the identity provider's "
        "administrator must add it (94, 2A...); the claim's name is the setting "
        "AUTH_DEPARTEMENT_CLAIM",
        "Votre jeton de préfecture ne désigne aucun département (claim {claim}) : "
        "l'administrateur du fournisseur d'identité doit l'ajouter (94, 2A…) ; le nom du "
        "claim est le réglage AUTH_DEPARTEMENT_CLAIM.",
    ),
    (
        "no such département table: this token is for département {departement}",
        "Ce tableau n'existe pas : votre jeton est celui du département {departement}.",
    ),
    # shared/auth.py: tokens.
    (
        "invalid {kind}: iat is not a number; {renew}",
        lambda v: (
            f"{_token(v['kind'])} est invalide : iat n'est pas un nombre ; {_then(v['renew'])}."
        ),
    ),  # fmt: skip
    (
        "{kind} issued in the future: the issuer's clock or this server's is wrong (the "
        "operator must set them right)",
        lambda v: (
            f"{_token(v['kind'])} est émis dans le futur : l'horloge de l'émetteur ou "
            "celle du service est fausse (l'exploitant doit les régler)."
        ),
    ),
    (
        "invalid {kind}: a claim holds NUL or a lone surrogate",
        lambda v: f"{_token(v['kind'])} est invalide : un claim contient un caractère invalide.",
    ),  # fmt: skip
    (
        "no token: send 'Authorization: Bearer <access token>', {then}",
        lambda v: f"Aucun jeton : il faut 'Authorization: Bearer <jeton>' ; {_then(v['then'])}.",
    ),
    (
        "expected 'Authorization: Bearer <access token>', {then}",
        lambda v: f"Il faut 'Authorization: Bearer <jeton>' ; {_then(v['then'])}.",
    ),
    (
        "this token was issued by {issuer}; this service takes people's tokens from the "
        "identity provider {expected}: sign in there",
        "Ce jeton a été émis par {issuer} ; ce service prend les jetons des personnes du "
        "fournisseur d'identité {expected} : connectez-vous auprès de lui.",
    ),
    (
        "the token's organisation (claim {claim}) is not a UUID: the identity provider must "
        "give the organisation's id in Témoin",
        "L'organisation du jeton (claim {claim}) n'est pas un UUID : le fournisseur "
        "d'identité doit donner l'identifiant de l'organisation dans Témoin.",
    ),
    (
        "the token's signing key is not among the identity provider's ({error}): {renew}",
        lambda v: (
            "La clé qui a signé le jeton n'est pas parmi celles du fournisseur "
            f"d'identité : {_then(v['renew'])}."
        ),
    ),
    ("{kind} expired: {renew}", lambda v: f"{_token(v['kind'])} a expiré : {_then(v['renew'])}."),
    (
        "{kind} not valid yet (nbf): check the clocks, then {renew}",
        lambda v: (
            f"{_token(v['kind'])} n'est pas encore valide (nbf) : vérifiez les horloges, "
            f"puis {_then(v['renew'])}."
        ),
    ),
    (
        "{kind} is for another audience: this service takes tokens whose aud is {audience}; "
        "{renew}, for this service",
        lambda v: (
            f"{_token(v['kind'])} est destiné à un autre service : celui-ci prend les "
            f"jetons dont l'aud est {v['audience']} ; {_then(v['renew'])}, pour ce service."
        ),
    ),
    (
        "{kind} is from another issuer: this service takes those of {issuer}",
        lambda v: (
            f"{_token(v['kind'])} vient d'un autre émetteur : ce service prend ceux de "
            f"{v['issuer']}."
        ),
    ),
    (
        "{kind} lacks the claim {claim}: its issuer must set it",
        lambda v: (
            f"{_token(v['kind'])} n'a pas le claim {v['claim']} : son émetteur doit le renseigner."
        ),
    ),
    (
        "{kind} is signed with an algorithm this service does not take",
        lambda v: f"{_token(v['kind'])} est signé avec un algorithme que ce service ne prend pas.",
    ),
    (
        "{kind} signature does not verify: it was altered or signed by another key",
        lambda v: (
            f"La signature de {_token(v['kind']).replace('Le ', 'ce ', 1)} ne correspond "
            "pas : il a été modifié ou signé par une autre clé."
        ),
    ),
    (
        "not a {kind} (a JWT): {renew}",
        lambda v: f"Ce n'est pas un jeton (JWT) : {_then(v['renew'])}.",
    ),  # fmt: skip
    (
        "invalid {kind}: {error}; {renew}",
        lambda v: f"{_token(v['kind'])} est invalide ; {_then(v['renew'])}.",
    ),  # fmt: skip
    # shared/clips.py: a clip's metadata.
    ("the {header} header is missing", "L'en-tête {header} manque."),
    ("{header} is not base64url JSON", "{header} n'est pas du JSON en base64url."),
    (
        "invalid metadata: {names}",
        lambda v: f"Métadonnées incorrectes : {_field_names(v['names'])}.",
    ),  # fmt: skip
    (
        "a clip is video/* or {default}, not {given}",
        "Une vidéo est de type video/* ou {default}, pas {given}.",
    ),  # fmt: skip
    (
        "{field}: not a media type (type/subtype; parameter=value)",
        "{field} : ce n'est pas un type de média (type/sous-type; paramètre=valeur).",
    ),
    (
        "{field}: a clip is video/* or {default}, not {given}",
        "{field} : une vidéo est de type video/* ou {default}, pas {given}.",
    ),  # fmt: skip
    # Ingest.
    (
        "unknown station {station}: a maire or responsable must register it (`temoin station "
        "register`), and the dock use the key file it writes",
        "Station d'accueil inconnue {station} : le maire ou un responsable doit l'enregistrer "
        "(`temoin station register`), et la station utiliser le fichier de clé ainsi écrit.",
    ),
    (
        "the assertion's timestamp is more than {seconds} s from the server's clock: set the "
        "dock's clock right (NTP)",
        "L'horodatage de l'assertion s'écarte de plus de {seconds} s de l'horloge du service : "
        "réglez l'horloge de la station d'accueil (NTP).",
    ),
    (
        "invalid station token: its subject is not a station id; {renew}",
        lambda v: (
            "Jeton de station d'accueil invalide : il ne nomme pas une station ; "
            f"{_then(v['renew'])}."
        ),
    ),  # fmt: skip
    ("a clip is at most {size} bytes", "Une vidéo fait au plus {size} octets."),
    (
        "Content-Length exceeds the declared size ({size} bytes)",
        "Content-Length dépasse la taille déclarée ({size} octets).",
    ),  # fmt: skip
    (
        "Content-Length is {length}, the declared size {size}",
        "Content-Length vaut {length}, la taille déclarée {size}.",
    ),  # fmt: skip
    (
        "this upload is {status}: upload the clip again",
        lambda v: f"Ce versement est {_status(v['status'])} : versez la vidéo à nouveau.",
    ),  # fmt: skip
    (
        "the body ended after {received} of {size} bytes",
        "Le contenu s'est arrêté après {received} octets sur {size}.",
    ),  # fmt: skip
    (
        "more than the declared {size} bytes were sent",
        "Plus que les {size} octets déclarés ont été envoyés.",
    ),  # fmt: skip
    (
        "this server speaks tus {version} (Tus-Resumable header)",
        "Ce service parle tus {version} (en-tête Tus-Resumable).",
    ),  # fmt: skip
    (
        "Upload-Checksum algorithm {algorithm} is not supported",
        "L'algorithme {algorithm} d'Upload-Checksum n'est pas pris en charge.",
    ),  # fmt: skip
    (
        "Upload-Checksum: not a {algorithm} digest",
        "Upload-Checksum : ce n'est pas une empreinte {algorithm}.",
    ),  # fmt: skip
    (
        "Upload-Length exceeds Tus-Max-Size ({size} bytes)",
        "Upload-Length dépasse Tus-Max-Size ({size} octets).",
    ),  # fmt: skip
    (
        "Upload-Length is {length}, the declared size {size}",
        "Upload-Length vaut {length}, la taille déclarée {size}.",
    ),  # fmt: skip
    ("a PATCH body must be {type}", "Le contenu d'un PATCH doit être {type}."),
    (
        "the receipt on file for this recording is not its own ({reason})",
        "Le récépissé enregistré pour cet enregistrement n'est pas le sien ({reason}) : "
        "le stockage a été modifié, aucune copie n'y est liée.",
    ),  # fmt: skip
    (
        "the upload is at {offset} of {length} bytes: no receipt yet",
        "Le versement en est à {offset} octets sur {length} : pas encore de récépissé.",
    ),  # fmt: skip
    (
        "Upload-Metadata: the value of {key} is not base64",
        "Upload-Metadata : la valeur de {key} n'est pas en base64.",
    ),  # fmt: skip
    (
        "the upload is at offset {offset}, not {given}",
        "Le versement en est à l'octet {offset}, pas {given}.",
    ),  # fmt: skip
    (
        "more than the declared Upload-Length of {size} bytes",
        "Plus que les {size} octets déclarés par Upload-Length.",
    ),  # fmt: skip
    (
        "this upload is {status} already",
        lambda v: f"Ce versement est déjà {_status(v['status'])}.",
    ),  # fmt: skip
    # Reporting.
    (
        "the report for {start} to {end} was finalised on {day}: {what}",
        lambda v: (
            f"Le rapport du {_day(v['start'])} au {_day(v['end'])} a été finalisé le "
            f"{_day(v['day'])} : {_then(v['what'])}."
        ),
    ),
    # Vault: the audit trail.
    (
        "refusing to sign the log: {problem}; run `temoin audit verify`",
        "Le journal n'est pas signé : {problem} ; lancez `temoin audit verify`.",
    ),  # fmt: skip
    (
        "{name} is not a witness of this log (VAULT_AUDIT_WITNESSES)",
        "{name} n'est pas un témoin de ce journal (VAULT_AUDIT_WITNESSES).",
    ),  # fmt: skip
    # Vault: the directory.
    (
        "communes already served by another organisation: {communes}",
        "Communes déjà desservies par une autre organisation : {communes}.",
    ),  # fmt: skip
    ("matricule {matricule} already exists", "Le matricule {matricule} existe déjà."),
    (
        "the préfet's authorisation allows {count} cameras in service; retire one first",
        "L'autorisation du préfet permet {count} caméras en service : retirez-en une d'abord.",
    ),
    ("camera {serial} already exists", "La caméra {serial} existe déjà."),
    (
        "camera {serial} is {status}",
        lambda v: f"La caméra {v['serial']} est {_status(v['status'])}.",
    ),  # fmt: skip
    ("{name} cannot be null", "{name} ne peut pas être vide."),
    # Vault: procedures, recordings.
    (
        "this recording's registry row differs from what the log attests: no package can be "
        "made until it is resolved ({problem})",
        "La fiche de cet enregistrement diffère de ce qu'atteste le journal : aucun paquet ne "
        "peut être fait tant que ce n'est pas résolu ({problem}).",
    ),
    (
        "this anonymised copy's registry row differs from what the log attests: no package "
        "can be made until it is resolved ({problem})",
        "La fiche de cette copie anonymisée diffère de ce qu'atteste le journal : aucun paquet "
        "ne peut être fait tant que ce n'est pas résolu ({problem}).",
    ),
    (
        "the clip has {size} bytes: no byte of that range is in it",
        "La vidéo fait {size} octets : aucun octet de cette plage n'y figure.",
    ),  # fmt: skip
    (
        "this data key was wrapped by the key-encryption key {key}, which this vault is not "
        "configured with",
        "La clé de chiffrement de cet enregistrement a été protégée par la clé {key}, que ce "
        "coffre n'a pas.",
    ),
    (
        "this media URL is not valid (altered): {then}",
        lambda v: f"Ce lien vers la vidéo n'est pas valide (modifié) : {_then(v['then'])}.",
    ),  # fmt: skip
    (
        "this media URL is not valid (malformed): {then}",
        lambda v: f"Ce lien vers la vidéo n'est pas valide (mal formé) : {_then(v['then'])}.",
    ),  # fmt: skip
    (
        "this media URL is not valid: {then}",
        lambda v: f"Ce lien vers la vidéo n'est pas valide : {_then(v['then'])}.",
    ),  # fmt: skip
    (
        "this media URL has expired: {then}",
        lambda v: f"Ce lien vers la vidéo a expiré : {_then(v['then'])}.",
    ),  # fmt: skip
    (
        "the sealed object ends {count} bytes early",
        "L'objet scellé se termine {count} octets trop tôt.",
    ),  # fmt: skip
    ("the sealed object is missing: {key}", "L'objet scellé est introuvable : {key}."),
    ("no sealed object is registered for it", "Aucun objet scellé n'est enregistré pour lui."),
    (
        "sealed format version {version} is not supported",
        "La version {version} du format scellé n'est pas prise en charge.",
    ),  # fmt: skip
    ("chunk {index} failed authentication", "Le bloc {index} ne s'authentifie pas."),
    ("this camera is {status}", lambda v: f"Cette caméra est {_status(v['status'])}."),
    (
        "the camera was assigned to {agent} at that time, not {given}",
        "La caméra était alors attribuée à {agent}, pas à {given}.",
    ),
    (
        "the viewer no longer holds the role {role}: {reason}",
        lambda v: (
            f"La personne qui visionne n'a plus le rôle {_roles(v['role'])} : {_then(v['reason'])}."
        ),
    ),
    (
        "this service does not give wearers access to their recordings: {then}",
        lambda v: (
            "Ce service ne donne pas aux porteurs l'accès à leurs enregistrements : "
            f"{_then(v['then'])}."
        ),
    ),
    (
        "this service no longer gives wearers access to their recordings: {then}",
        lambda v: (
            "Ce service ne donne plus aux porteurs l'accès à leurs enregistrements : "
            f"{_then(v['then'])}."
        ),
    ),
    # Signed notes (shared/notes.py).
    (
        "not a verifier key (name+hash+base64): {text}",
        "Ce n'est pas une clé de vérification (nom+empreinte+base64) : {text}.",
    ),  # fmt: skip
    ("not a verifier key: {text}", "Ce n'est pas une clé de vérification : {text}."),
    ("malformed extension line: {error}", "Ligne d'extension mal formée : {error}."),
    (
        "verifier key {name}: only Ed25519 keys (type 0x01, 0x04)",
        "Clé de vérification {name} : seulement des clés Ed25519 (type 0x01, 0x04).",
    ),  # fmt: skip
    (
        "verifier key {name}: its hash does not match the key",
        "Clé de vérification {name} : son empreinte ne correspond pas à la clé.",
    ),  # fmt: skip
    ("the signature of {name} does not verify", "La signature de {name} ne correspond pas."),
    (
        "invalid key name {name}: no space, no plus sign",
        "Nom de clé invalide {name} : ni espace, ni signe plus.",
    ),  # fmt: skip
    # Vault: why an anonymised copy's job ended (services/vault/derivatives/jobs.py and
    # service.py), shown on the dashboard's copy page (services/dashboard/derivatives/).
    ("cancelled", "à la demande d'une personne habilitée"),
    ("cancelled by {subject}", "à la demande de {subject}"),
    ("the original was erased", "l'enregistrement original a été effacé"),
    (
        "the original failed its integrity check",
        "l'enregistrement original a échoué au contrôle d'intégrité",
    ),  # fmt: skip
    (
        "the recording cannot be decoded: {reason}",
        lambda v: f"la vidéo ne peut pas être décodée ({_then(v['reason'])})",
    ),  # fmt: skip
    (
        "the anonymisation failed: {error}",
        "l'anonymisation a échoué (erreur {error}, consignée pour l'équipe technique)",
    ),  # fmt: skip
    (
        "this recording failed its integrity check: {problem}",
        lambda v: f"l'enregistrement a échoué au contrôle d'intégrité : {_then(v['problem'])}",
    ),
]


_MONTHS = ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août",
           "septembre", "octobre", "novembre", "décembre")  # fmt: skip


def _day(value: str) -> str:
    """« 1er janvier 2025 » for 2025-01-01; any other text as it is."""
    found = re.fullmatch(r"(\d{4})-(\d{2})-(\d{2})", value)
    if found is None or not 1 <= int(found.group(2)) <= 12:
        return value
    day = int(found.group(3))
    return f"{'1er' if day == 1 else day} {_MONTHS[int(found.group(2)) - 1]} {found.group(1)}"


def _roles(value: str) -> str:
    return ", ".join(_ROLE.get(r.strip(), r.strip()) for r in value.split(","))


def _who(value: str) -> str:
    return {
        "a maire or responsable": "le maire ou un responsable",
        "the maire (or another responsable)": "le maire (ou un autre responsable)",
    }.get(value, value)


def _granted(value: str) -> str:
    found = re.fullmatch(r" with the role (.+)", value)
    return f" avec le rôle {_roles(found.group(1))}" if found else ""


# A value holds no « ; » (which joins a refusal's reasons), except these, which are clauses.
_CLAUSES = {"renew", "then", "what", "reason", "problem"}


def _compiled(english: str) -> re.Pattern[str]:
    """``{name}`` becomes a named group taking any text; the rest is matched as written."""
    pieces = re.split(r"\{(\w+)\}", english)
    regex = "".join(
        re.escape(piece)
        if n % 2 == 0
        else f"(?P<{piece}>.*?)"
        if piece in _CLAUSES
        else f"(?P<{piece}>[^;]*?)"
        for n, piece in enumerate(pieces)
    )
    return re.compile(regex, re.S)


def _literal_length(english: str) -> int:
    return len(re.sub(r"\{\w+\}", "", english))


# The most specific first: « {kind} expired: {renew} » must not take « this media URL has
# expired: … ».
PATTERNS: list[tuple[re.Pattern[str], Render]] = [
    (_compiled(e), f) for e, f in sorted(_PATTERNS, key=lambda p: -_literal_length(p[0]))
]


def _sentence(text: str, *, end: bool = True) -> str:
    """A French sentence (capital, final full stop) or, ``end=False``, a clause (neither)."""
    text = text.strip()
    if end:
        text = text[:1].upper() + text[1:]
        return text if text.endswith((".", "?", "!", "…")) else text + "."
    if text.endswith(".") and not text.endswith("…"):
        text = text[:-1]
    if re.match(r"[A-Z]{2}|['`/(]", text):  # an acronym, a name, a command: as written
        return text
    return text[:1].lower() + text[1:]


def _one(detail: str) -> str | None:
    if detail in EXACT:
        return EXACT[detail]
    for pattern, french in PATTERNS:
        found = pattern.fullmatch(detail)
        if found is not None:
            values = found.groupdict()
            return french(values) if callable(french) else french.format(**values)
    return None


def in_french(detail: str) -> str | None:
    """The detail in French, or None when this module does not know it."""
    detail = detail.strip()
    if not detail:
        return None
    said = _one(detail)
    if said is not None:
        return said
    # A refusal that gives several reasons joins them with « ; » (shared/access.py); a reason
    # may hold one itself: the longest known run of parts is taken first.
    parts = detail.split("; ")
    sentences: list[str] = []
    start = 0
    while start < len(parts):
        for end in range(len(parts), start, -1):
            one = _one("; ".join(parts[start:end]))
            if one is not None:
                sentences.append(_sentence(one))
                start = end
                break
        else:
            return None
    return " ".join(sentences) if len(parts) > 1 else None


def said(detail: str) -> str:
    """The detail in French for the page: never English (an unknown one is logged)."""
    if not detail:
        return ""
    french = in_french(detail)
    if french is None:
        _logger.warning("an API detail without French translation: %r", detail)
        return UNKNOWN
    return french


def _plural(count: Any, word: str) -> str:
    return f"{count} {word}{'s' if isinstance(count, int) and count > 1 else ''}"


_EXPECTED = {"'json', 'csv' or 'pdf'": "json, csv ou pdf"}
# pydantic's error types (https://docs.pydantic.dev/latest/errors/validation_errors/), in
# French with the values of the error's ``ctx``.
VALIDATION: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "missing": lambda c: "Ce champ est obligatoire.",
    "string_too_short": lambda c: f"Au moins {_plural(c.get('min_length', 1), 'caractère')}.",
    "string_too_long": lambda c: f"Au plus {_plural(c.get('max_length', 0), 'caractère')}.",
    "string_pattern_mismatch": lambda c: "Le format ne convient pas.",
    "string_type": lambda c: "Un texte est attendu.",
    "string_unicode": lambda c: "Un texte est attendu.",
    "int_parsing": lambda c: "Un nombre entier est attendu.",
    "int_type": lambda c: "Un nombre entier est attendu.",
    "int_from_float": lambda c: "Un nombre entier est attendu.",
    "float_parsing": lambda c: "Un nombre est attendu.",
    "float_type": lambda c: "Un nombre est attendu.",
    "bool_parsing": lambda c: "Oui ou non est attendu.",
    "bool_type": lambda c: "Oui ou non est attendu.",
    "greater_than": lambda c: f"Plus de {c.get('gt', '')}.",
    "greater_than_equal": lambda c: f"Au moins {c.get('ge', '')}.",
    "less_than": lambda c: f"Moins de {c.get('lt', '')}.",
    "less_than_equal": lambda c: f"Au plus {c.get('le', '')}.",
    "date_parsing": lambda c: "Une date est attendue (AAAA-MM-JJ).",
    "date_from_datetime_parsing": lambda c: "Une date est attendue (AAAA-MM-JJ).",
    "date_from_datetime_inexact": lambda c: "Une date sans heure est attendue.",
    "date_type": lambda c: "Une date est attendue (AAAA-MM-JJ).",
    "datetime_parsing": lambda c: "Une date et une heure sont attendues.",
    "datetime_from_date_parsing": lambda c: "Une date et une heure sont attendues.",
    "datetime_type": lambda c: "Une date et une heure sont attendues.",
    "timezone_aware": lambda c: "Une heure avec son fuseau horaire est attendue.",
    "uuid_parsing": lambda c: "Un identifiant (UUID) est attendu.",
    "uuid_type": lambda c: "Un identifiant (UUID) est attendu.",
    "enum": lambda c: f"Choisissez l'une des valeurs : {_expected(c)}.",
    "literal_error": lambda c: f"Choisissez l'une des valeurs : {_expected(c)}.",
    "extra_forbidden": lambda c: "Ce champ n'est pas attendu.",
    "json_invalid": lambda c: "Le JSON est invalide.",
    "json_type": lambda c: "Du JSON est attendu.",
    "dict_type": lambda c: "Un objet est attendu.",
    "model_type": lambda c: "Un objet est attendu.",
    "model_attributes_type": lambda c: "Un objet est attendu.",
    "list_type": lambda c: "Une liste est attendue.",
    "too_short": lambda c: f"Au moins {_plural(c.get('min_length', 1), 'élément')}.",
    "too_long": lambda c: f"Au plus {_plural(c.get('max_length', 0), 'élément')}.",
    "url_parsing": lambda c: "Une adresse web (URL) est attendue.",
    "url_scheme": lambda c: "Une adresse web (http ou https) est attendue.",
    "url_type": lambda c: "Une adresse web (URL) est attendue.",
}
INVALID = "Valeur incorrecte."


def _expected(ctx: Mapping[str, Any]) -> str:
    expected = str(ctx.get("expected", ""))
    return _EXPECTED.get(expected, expected.replace("'", "").replace(" or ", " ou "))


def field_message(error: Mapping[str, Any]) -> str:
    """A 422's error for one field, in French: by pydantic's ``type`` (with its ``ctx``),
    else the API's own message translated; never English."""
    kind = str(error.get("type") or "")
    message = str(error.get("message") or "")
    ctx = error.get("ctx")
    ctx = ctx if isinstance(ctx, Mapping) else {}
    if kind in VALIDATION:
        return VALIDATION[kind](ctx)
    if kind in ("value_error", "assertion_error"):
        # The service's own words, after pydantic's prefix.
        reason = re.sub(r"^(Value|Assertion) error, ", "", message)
        known = in_french(reason)
        if known is not None:
            return _sentence(known)
    elif not kind:
        known = in_french(message)
        if known is not None:
            return _sentence(known)
    if message:
        _logger.warning("a field error without French translation: %s %r", kind, message)
    return INVALID
