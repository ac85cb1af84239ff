#!/bin/sh
# The Casino's PKI the long way, with the openssl CLI: what
# `sigil pki quickstart` replaces. A root CA, a server certificate for
# localhost/127.0.0.1 (serverAuth) and two client certificates (clientAuth)
# whose identity is a SPIFFE ID in a URI SAN. The README shows the same
# commands; the tests run this file.
#
#   sh examples/casino/openssl-pki.sh certs-openssl
set -eu
out=${1:?usage: openssl-pki.sh DIR}
mkdir -p "$out"
cd "$out"
umask 077

# 1. The root CA: a key and a self-signed CA certificate.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key
openssl req -x509 -new -key ca.key -sha256 -days 365 -subj "/O=Casino/CN=Casino root CA" \
  -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out ca.pem

# 2. The server: a key, a request, and a certificate for its names.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out server.key
openssl req -new -key server.key -subj "/O=Casino/CN=localhost" -out server.csr
cat > server.ext <<'EXT'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,URI:spiffe://casino.example/server/localhost
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EXT
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -sha256 -days 30 \
  -extfile server.ext -out server.pem

# 3. Two clients, alice and bob: the same again, with clientAuth and a SPIFFE ID.
for name in alice bob; do
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$name.key"
  openssl req -new -key "$name.key" -subj "/O=Casino/CN=$name" -out "$name.csr"
  cat > "$name.ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
subjectAltName=URI:spiffe://casino.example/client/$name
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EXT
  openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -sha256 -days 30 \
    -extfile "$name.ext" -out "$name.pem"
done

# 4. Check the chain the way the TLS layer will.
openssl verify -CAfile ca.pem -purpose sslserver server.pem
openssl verify -CAfile ca.pem -purpose sslclient alice.pem bob.pem
