#!/bin/bash
# make_cert.sh DIR - a throw-away CA and a server certificate for 127.0.0.1 /
# localhost (subjectAltName), for vault_dev.py --tls-cert/--tls-key.
# Writes DIR/ca.pem (pass as CACertificate= / hvac verify=), DIR/ca-key.pem,
# DIR/server.pem, DIR/server-key.pem.  Needs only the openssl CLI.
set -euo pipefail
dir=${1:?usage: make_cert.sh DIR}
mkdir -p "$dir"
cd "$dir"
umask 077
openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 30 \
	-subj "/CN=vault-dev test CA" \
	-addext "basicConstraints=critical,CA:TRUE" \
	-addext "keyUsage=critical,keyCertSign,cRLSign" \
	-keyout ca-key.pem -out ca.pem 2>/dev/null
openssl req -newkey rsa:2048 -nodes -sha256 -subj "/CN=localhost" \
	-keyout server-key.pem -out server.csr 2>/dev/null
cat > server.ext <<'EXT'
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost
EXT
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
	-days 30 -sha256 -extfile server.ext -out server.pem 2>/dev/null
rm -f server.csr server.ext ca.srl
chmod 644 ca.pem server.pem
echo "$dir/ca.pem $dir/server.pem $dir/server-key.pem"
