#!/bin/sh
# certs.sh DIR NAME...: the one-shot `certs` service of docker-compose.yml.
#
# When DIR (the certs volume) holds no ca.pem, make a test PKI in it with
# `dmtls certs`: a CA (ca.pem, ca-key.pem) and, for each NAME, a leaf
# NAME.pem / NAME-key.pem with CN=NAME and DNS:NAME (serverAuth and
# clientAuth: a sidecar presents it on both ends of its routes).  When DIR
# already has a PKI, change nothing: restarting the stack keeps its
# certificates.
#
# It runs as root with only CAP_CHOWN (to give the keys to the group dmtls,
# gid 10001, the sidecars' user): keys are 0640 root:dmtls, certificates
# 0644, the CA key 0600 root, which the sidecars cannot read.  Everything is
# made in a scratch folder inside DIR and renamed into place, ca.pem last,
# so an interrupted run leaves no half PKI that the next run would keep.
#
# A test PKI only: for production, fill the volume (or a bind-mounted
# folder) with your own CA's certificates under the same names and leave
# this service out; README.md, "docker-compose".
set -eu
dir=$1
shift
if [ -e "$dir/ca.pem" ]; then
	echo "certs: $dir already holds a PKI (ca.pem); nothing to do"
	exit 0
fi
new=$(mktemp -d "$dir/.new.XXXXXX")
trap 'rm -rf "$new"' EXIT
dmtls certs init "$new/ca" --cn unused >/dev/null
mv "$new/ca/ca.pem" "$new/ca/ca-key.pem" "$new/"
for name in "$@"; do
	dmtls certs issue "$new" --name "$name" --cn "$name" --dns "$name" \
	    --group dmtls >/dev/null
done
for name in "$@"; do
	mv "$new/$name.pem" "$new/$name-key.pem" "$dir/"
done
mv "$new/ca-key.pem" "$dir/"
mv "$new/ca.pem" "$dir/"
echo "certs: made a test PKI in $dir: ca.pem and a leaf for each of: $*"
