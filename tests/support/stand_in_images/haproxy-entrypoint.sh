#!/bin/sh
# The stand-in haproxy image's entrypoint, as the official image's: `haproxy ARGS` (or bare
# options) runs HAProxy in master-worker mode (-W) in the foreground (-db).
set -e
if [ "${1#-}" != "$1" ]; then
    set -- haproxy "$@"
fi
if [ "$1" = haproxy ]; then
    shift
    set -- haproxy -W -db "$@"
fi
exec "$@"
