package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// keyPair writes a fresh ECDSA P-256 key pair as PEM files, as
// `openssl ecparam -genkey` and `openssl ec -pubout` would.
func keyPair(t *testing.T, dir, name string) (priv, pub string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sec1, _ := x509.MarshalECPrivateKey(k)
	pkix, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	priv, pub = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".pub")
	if err := os.WriteFile(priv, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkix}), 0o644); err != nil {
		t.Fatal(err)
	}
	return priv, pub
}

// TestSignVerifyRun: dockyard sign stores a cosign-format signature in the
// registry; dockyard verify and dockyard run --verify-key accept the image
// with the signer's key only, and run refuses before starting anything.
func TestSignVerifyRun(t *testing.T) {
	requireRoot(t)
	RequireTool(t, "crane")
	RequireTool(t, "runc")
	c := SharedCluster(t)
	ref := c.Registry + "/" + uniqueRepo("signed") + ":v1"
	Run(t, time.Minute, "crane", "append", "--insecure", "-f", busyboxLayer(t), "-t", ref)
	bin := Binary(t)
	keys := t.TempDir()
	priv, pub := keyPair(t, keys, "alice")
	_, otherPub := keyPair(t, keys, "mallory")

	if out, err := RunErr(time.Minute, bin, "verify", "--key", pub, ref); err == nil || !strings.Contains(out, "no signatures") {
		t.Fatalf("verify of an unsigned image: %v\n%s", err, out)
	}
	out := Run(t, time.Minute, bin, "sign", "--key", priv, ref)
	if !strings.Contains(out, "signed") || !strings.Contains(out, ".sig") {
		t.Errorf("sign printed %q", out)
	}
	// The signature is an ordinary artifact any client can read.
	tag := strings.TrimSpace(out[strings.Index(out, "(")+1 : strings.LastIndex(out, ")")])
	repo := ref[:strings.LastIndex(ref, ":")]
	if m := Run(t, time.Minute, "crane", "manifest", "--insecure", repo+":"+tag); !strings.Contains(m, "application/vnd.dev.cosign.simplesigning.v1+json") {
		t.Errorf("signature manifest %s:\n%s", tag, m)
	}
	if out := Run(t, time.Minute, bin, "verify", "--key", pub, ref); !strings.Contains(out, "verified") {
		t.Errorf("verify printed %q", out)
	}
	if out, err := RunErr(time.Minute, bin, "verify", "--key", otherPub, ref); err == nil || !strings.Contains(out, "does not verify") {
		t.Errorf("verify with another key: %v\n%s", err, out)
	}

	// Attached through the referrers API instead of the tag.
	refPriv, refPub := keyPair(t, keys, "bob")
	if out := Run(t, time.Minute, bin, "sign", "--referrer", "--key", refPriv, ref); !strings.Contains(out, "referrer") {
		t.Errorf("sign --referrer printed %q", out)
	}
	if out := Run(t, time.Minute, bin, "verify", "--key", refPub, ref); !strings.Contains(out, "verified") {
		t.Errorf("verify of a referrer signature printed %q", out)
	}

	// An image mount checks too, before it mounts anything.
	mnt := t.TempDir()
	if out, err := RunErr(time.Minute, bin, "mount", "--meta", c.Meta, "--image", ref, "--verify-key", otherPub, mnt); err == nil || !strings.Contains(out, "no valid signature") {
		t.Errorf("mount --image with another key: %v\n%s", err, out)
	}
	if out, err := RunErr(time.Minute, bin, "mount", "--meta", c.Meta, "--verify-key", pub, mnt); err == nil || !strings.Contains(out, "needs --image") {
		t.Errorf("mount --verify-key without --image: %v\n%s", err, out)
	}

	state := t.TempDir()
	if out := Run(t, 2*time.Minute, bin, "run", "--meta", c.Meta, "--state-dir", state, "--verify-key", pub, ref, "--", "/bin/sh", "-c", "echo trusted"); !strings.Contains(out, "trusted") {
		t.Errorf("run with the signer's key printed %q", out)
	}
	out, err := RunErr(2*time.Minute, bin, "run", "--meta", c.Meta, "--state-dir", state, "--verify-key", otherPub, ref, "--", "/bin/sh", "-c", "echo trusted")
	if err == nil || strings.Contains(out, "trusted") || !strings.Contains(out, "no valid signature") {
		t.Errorf("run with another key: %v\n%s", err, out)
	}
}
