#!/bin/sh
# The per-node image counts with kubectl and jq: `kubectl get nodes -o json`
# (which pages through the list 500 nodes at a time and prints one NodeList),
# and jq computing each node's number of image entries and names.
# Prints the number of nodes and image names seen.
set -eu
kubectl get nodes -o json \
  | jq -r '.items[] | [.metadata.name, (.status.images // [] | length),
           ([.status.images // [] | .[].names // [] | length] | add // 0)] | @tsv' \
  | awk '{ nodes += 1; names += $3 } END { print nodes, names }'
