// verify: Go's crypto/x509 as an independent peer for sigil's tests.
//
// Reads newline-delimited JSON requests on stdin and writes one JSON line per
// request on stdout, in order, until stdin closes. Standard library only.
//
// Request:
//
//	{"roots": [PEM...], "intermediates": [PEM...], "leaf": PEM,
//	 "usage": "client"|"server"|"any", "dnsName": "optional", "at": "optional RFC3339"}
//
// Each PEM string may hold several certificates. dnsName may also be an IP
// address (Go's VerifyHostname checks IP SANs then).
//
// Response:
//
//	{"ok": bool, "error": string, "chains": [[subject...]], "leafUris": [...],
//	 "leafExtensionOids": [...], "certificates": [{"role", "subject", "extensionOids", "uris"}]}
//
// A certificate that crypto/x509 cannot parse (for example "x509: malformed
// extension OID field") is reported as ok:false with the error, never a crash.
// A request line that is not valid JSON gets ok:false too, so the stream stays
// in step.
package main

import (
	"bufio"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

type request struct {
	Roots         []string `json:"roots"`
	Intermediates []string `json:"intermediates"`
	Leaf          string   `json:"leaf"`
	Usage         string   `json:"usage"`
	DNSName       string   `json:"dnsName"`
	At            string   `json:"at"`
}

type certificateInfo struct {
	Role          string   `json:"role"`
	Subject       string   `json:"subject"`
	ExtensionOids []string `json:"extensionOids"`
	URIs          []string `json:"uris"`
}

type response struct {
	OK                bool              `json:"ok"`
	Error             string            `json:"error"`
	Chains            [][]string        `json:"chains"`
	LeafURIs          []string          `json:"leafUris"`
	LeafExtensionOids []string          `json:"leafExtensionOids"`
	Certificates      []certificateInfo `json:"certificates"`
}

// parseAll decodes every CERTIFICATE block in the PEM strings and parses it.
func parseAll(role string, pems []string, infos *[]certificateInfo) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for i, text := range pems {
		rest := []byte(text)
		found := 0
		for {
			var block *pem.Block
			block, rest = pem.Decode(rest)
			if block == nil {
				break
			}
			if block.Type != "CERTIFICATE" {
				continue
			}
			found++
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%s %d: %w", role, i, err)
			}
			*infos = append(*infos, describe(role, cert))
			out = append(out, cert)
		}
		if found == 0 {
			return nil, fmt.Errorf("%s %d: no CERTIFICATE block in PEM", role, i)
		}
	}
	return out, nil
}

func describe(role string, cert *x509.Certificate) certificateInfo {
	return certificateInfo{Role: role, Subject: cert.Subject.String(), ExtensionOids: oids(cert), URIs: uris(cert)}
}

func oids(cert *x509.Certificate) []string {
	out := []string{}
	for _, ext := range cert.Extensions {
		out = append(out, ext.Id.String())
	}
	return out
}

func uris(cert *x509.Certificate) []string {
	out := []string{}
	for _, u := range cert.URIs {
		out = append(out, u.String())
	}
	return out
}

func handle(line []byte) response {
	res := response{Chains: [][]string{}, LeafURIs: []string{}, LeafExtensionOids: []string{}, Certificates: []certificateInfo{}}
	var req request
	if err := json.Unmarshal(line, &req); err != nil {
		res.Error = "bad request: " + err.Error()
		return res
	}
	var keyUsages []x509.ExtKeyUsage
	switch req.Usage {
	case "client":
		keyUsages = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	case "server":
		keyUsages = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	case "any":
		keyUsages = []x509.ExtKeyUsage{x509.ExtKeyUsageAny}
	default:
		res.Error = fmt.Sprintf("bad request: usage must be client, server or any, not %q", req.Usage)
		return res
	}
	at := time.Now()
	if req.At != "" {
		t, err := time.Parse(time.RFC3339, req.At)
		if err != nil {
			res.Error = "bad request: at: " + err.Error()
			return res
		}
		at = t
	}

	leaves, err := parseAll("leaf", []string{req.Leaf}, &res.Certificates)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	leaf := leaves[0]
	res.LeafURIs = uris(leaf)
	res.LeafExtensionOids = oids(leaf)
	intermediates, err := parseAll("intermediate", req.Intermediates, &res.Certificates)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	roots, err := parseAll("root", req.Roots, &res.Certificates)
	if err != nil {
		res.Error = err.Error()
		return res
	}

	opts := x509.VerifyOptions{
		Roots:         x509.NewCertPool(),
		Intermediates: x509.NewCertPool(),
		DNSName:       req.DNSName,
		CurrentTime:   at,
		KeyUsages:     keyUsages,
	}
	for _, c := range roots {
		opts.Roots.AddCert(c)
	}
	for _, c := range intermediates {
		opts.Intermediates.AddCert(c)
	}
	chains, err := leaf.Verify(opts)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	for _, chain := range chains {
		subjects := []string{}
		for _, c := range chain {
			subjects = append(subjects, c.Subject.String())
		}
		res.Chains = append(res.Chains, subjects)
	}
	res.OK = true
	return res
}

func main() {
	in := bufio.NewReaderSize(os.Stdin, 1<<20)
	out := bufio.NewWriter(os.Stdout)
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false)
	for {
		line, err := in.ReadBytes('\n')
		if len(strings.TrimSpace(string(line))) > 0 {
			if encErr := enc.Encode(handle(line)); encErr != nil {
				fmt.Fprintln(os.Stderr, "verify:", encErr)
				os.Exit(1)
			}
			if flushErr := out.Flush(); flushErr != nil {
				os.Exit(1)
			}
		}
		if err == io.EOF {
			return
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "verify:", err)
			os.Exit(1)
		}
	}
}
