package transport

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// File names inside an identity directory.
const (
	CACertFile   = "ca.crt"
	CAKeyFile    = "ca.key"
	NodeCertFile = "node.crt"
	NodeKeyFile  = "node.key"
)

// SaveCA writes the CA certificate and key to dir, the key readable by
// its owner only.
func SaveCA(dir string, ca *CA) error {
	if ca == nil || ca.Cert == nil || ca.Key == nil {
		return fmt.Errorf("save ca: %w: incomplete ca", ErrBadIdentity)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save ca: %w", err)
	}
	if err := writeCert(filepath.Join(dir, CACertFile), ca.Cert); err != nil {
		return err
	}
	return writeKey(filepath.Join(dir, CAKeyFile), ca.Key)
}

// LoadCA reads the CA written by SaveCA and checks that key and
// certificate belong together.
func LoadCA(dir string) (*CA, error) {
	cert, err := readCert(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, err
	}
	key, err := readKey(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, err
	}
	if !cert.IsCA || !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("load ca %s: %w: key does not match a ca certificate", dir, ErrBadIdentity)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// RemoveCAKey deletes the CA key from dir, for a node that is not (or
// no longer) a voter; a key that is not there is no error.
func RemoveCAKey(dir string) error {
	err := os.Remove(filepath.Join(dir, CAKeyFile))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove ca key: %w", err)
	}
	return nil
}

func writeCert(path string, cert *x509.Certificate) error {
	data := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
	return writeFileAtomic(path, data, 0o644)
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("marshal key %s: %w", path, err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	return writeFileAtomic(path, data, 0o600)
}

// writeFileAtomic replaces path in one rename, so that a crash never
// leaves a half-written key or certificate, and creates it with mode
// from the start, so that a key is never readable by others.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func readPEM(path, blockType string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read %s: %w", path, ErrNoIdentity)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	b, _ := pem.Decode(data)
	if b == nil || b.Type != blockType {
		return nil, fmt.Errorf("read %s: %w: no %s block", path, ErrBadIdentity, blockType)
	}
	return b.Bytes, nil
}

func readCert(path string) (*x509.Certificate, error) {
	der, err := readPEM(path, "CERTIFICATE")
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w: %w", path, ErrBadIdentity, err)
	}
	return cert, nil
}

func readKey(path string) (*ecdsa.PrivateKey, error) {
	der, err := readPEM(path, "PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	return parseKey(der, path)
}

// parseKey parses a PKCS#8 ECDSA key; what names the key in errors.
func parseKey(der []byte, what string) (*ecdsa.PrivateKey, error) {
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %w", what, ErrBadIdentity, err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: %w: key %T is not ecdsa", what, ErrBadIdentity, k)
	}
	return key, nil
}
