// A cross-check of Témoin's checkpoints and cosignatures with Go's golang.org/x/mod/sumdb/note
// and crypto/ed25519 (the cosignature verifier is transparency-dev/formats' logic). It made the
// vectors of tests/test_notes.py (test_checkpoint_and_cosignature_as_go_makes_them), and opened
// a checkpoint and cosignature made by Témoin. Not run by the suite (no Go on the machines):
//
//	apt-get install golang-go golang-golang-x-mod-dev
//	mkdir -p /tmp/go/src/crosscheck && cp go_crosscheck.go /tmp/go/src/crosscheck/main.go
//	GO111MODULE=off GOPATH=/tmp/go:/usr/share/gocode go build -o crosscheck crosscheck
//	./crosscheck open NOTE_FILE LOG_VKEY WITNESS_VKEY
//	./crosscheck sign PRIVATE+KEY+... TEXT_FILE
//	./crosscheck cosign SEED_BASE64 NAME TIMESTAMP TEXT_FILE
package main

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

// The cosignature/v1 verifier of transparency-dev/formats (note/note_cosigv1.go), Ed25519 only.
type cosig struct {
	name string
	hash uint32
	key  ed25519.PublicKey
}

func (v cosig) Name() string    { return v.name }
func (v cosig) KeyHash() uint32 { return v.hash }
func (v cosig) Verify(msg, sig []byte) bool {
	if len(sig) != 8+ed25519.SignatureSize {
		return false
	}
	t := binary.BigEndian.Uint64(sig)
	m := []byte(fmt.Sprintf("cosignature/v1\ntime %d\n%s", t, msg))
	return ed25519.Verify(v.key, m, sig[8:])
}

func newCosig(vkey string) cosig {
	parts := strings.SplitN(vkey, "+", 3)
	raw, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || raw[0] != 4 || len(raw) != 33 {
		panic("bad cosignature vkey")
	}
	h := sha256.Sum256(append([]byte(parts[0]+"\n"), raw...))
	hash := binary.BigEndian.Uint32(h[:4])
	want, _ := strconv.ParseUint(parts[1], 16, 32)
	if uint32(want) != hash {
		panic("cosignature vkey hash mismatch")
	}
	return cosig{parts[0], hash, ed25519.PublicKey(raw[1:])}
}

func main() {
	switch os.Args[1] {
	case "open": // open NOTE_FILE LOG_VKEY WITNESS_VKEY
		data, _ := os.ReadFile(os.Args[2])
		logKey, err := note.NewVerifier(os.Args[3])
		if err != nil {
			panic(err)
		}
		n, err := note.Open(data, note.VerifierList(logKey, newCosig(os.Args[4])))
		if err != nil {
			fmt.Println("REJECTED", err)
			os.Exit(1)
		}
		for _, s := range n.Sigs {
			fmt.Printf("verified %s %08x\n", s.Name, s.Hash)
		}
	case "cosign": // cosign SEED_B64 NAME TIMESTAMP TEXT_FILE: formats' signer, fixed time
		seed, _ := base64.StdEncoding.DecodeString(os.Args[2])
		key := ed25519.NewKeyFromSeed(seed)
		pub := append([]byte{4}, key.Public().(ed25519.PublicKey)...)
		h := sha256.Sum256(append([]byte(os.Args[3]+"\n"), pub...))
		t, _ := strconv.ParseUint(os.Args[4], 10, 64)
		text, _ := os.ReadFile(os.Args[5])
		m := []byte(fmt.Sprintf("cosignature/v1\ntime %d\n%s", t, text))
		sig := binary.BigEndian.AppendUint64(h[:4:4], t)
		sig = append(sig, ed25519.Sign(key, m)...)
		fmt.Printf("— %s %s\n", os.Args[3], base64.StdEncoding.EncodeToString(sig))
	case "sign": // sign SKEY TEXT_FILE
		signer, err := note.NewSigner(os.Args[2])
		if err != nil {
			panic(err)
		}
		text, _ := os.ReadFile(os.Args[3])
		out, err := note.Sign(&note.Note{Text: string(text)}, signer)
		if err != nil {
			panic(err)
		}
		os.Stdout.Write(out)
	}
}
