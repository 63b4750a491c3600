#!/usr/bin/env bash
# Makes a kubeconfig for the docker-image-cleaner ServiceAccount (packaging/kubernetes/rbac.yaml),
# using the cluster and credentials of your current kubectl context to ask for the token.
#
#   kubectl apply -f packaging/kubernetes/rbac.yaml
#   packaging/kubernetes/make-kubeconfig.sh --output docker-image-cleaner.kubeconfig
#   # then on every node, as root:
#   install -D -m 0600 docker-image-cleaner.kubeconfig /etc/docker-image-cleaner/kubeconfig
#
# Two kinds of token (see the Kubernetes section of README.md for the trade-offs):
#   default    a bound token from `kubectl create token --duration` (expires: renew it in time;
#              the API server may cap the duration, check the expiry printed at the end)
#   --secret   a long-lived token kept in a Secret of type kubernetes.io/service-account-token
#              (never expires; revoked only by deleting the Secret)
#
# The token is written only into the output file (mode 0600), never on a command line or stdout.
set -euo pipefail

namespace=kube-system
account=docker-image-cleaner
duration=8760h
mode=token
output=docker-image-cleaner.kubeconfig
server=
context=

usage() {
    cat <<EOF
usage: $0 [options]
  --output FILE           where to write the kubeconfig (default: $output)
  --duration DURATION     lifetime of a bound token, e.g. 720h (default: $duration)
  --secret                use a long-lived Secret-based token instead of a bound one
  --server URL            API server URL the nodes use (default: the current context's)
  --namespace NAME        namespace of the ServiceAccount (default: $namespace)
  --service-account NAME  the ServiceAccount (default: $account)
  --context NAME          kubectl context to use (default: the current one)
EOF
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --output) output=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        --secret) mode=secret; shift ;;
        --server) server=$2; shift 2 ;;
        --namespace) namespace=$2; shift 2 ;;
        --service-account) account=$2; shift 2 ;;
        --context) context=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "$0: unknown argument: $1" >&2; usage >&2; exit 64 ;;
    esac
done

kc=(kubectl)
if [[ -n $context ]]; then
    kc+=(--context "$context")
fi

if [[ -z $server ]]; then
    server=$("${kc[@]}" config view --minify -o 'jsonpath={.clusters[0].cluster.server}')
fi
if [[ -z $server ]]; then
    echo "$0: no API server URL in the current context: pass --server URL" >&2
    exit 1
fi

# The CA as base64 PEM: from the context (files are inlined by --flatten), else from the
# kube-root-ca.crt ConfigMap that every namespace carries.
ca_data=$("${kc[@]}" config view --raw --minify --flatten \
    -o 'jsonpath={.clusters[0].cluster.certificate-authority-data}')
if [[ -z $ca_data ]]; then
    ca_data=$("${kc[@]}" get configmap kube-root-ca.crt -n "$namespace" \
        -o 'jsonpath={.data.ca\.crt}' | base64 | tr -d '\n')
fi
if [[ -z $ca_data ]]; then
    echo "$0: cannot find the cluster CA certificate" >&2
    exit 1
fi

case "$mode" in
    token)
        token=$("${kc[@]}" create token "$account" -n "$namespace" --duration "$duration")
        ;;
    secret)
        secret="$account-token"
        if ! "${kc[@]}" get secret "$secret" -n "$namespace" -o name >/dev/null 2>&1; then
            "${kc[@]}" create --validate=false -f - >/dev/null <<EOF
apiVersion: v1
kind: Secret
type: kubernetes.io/service-account-token
metadata:
  name: $secret
  namespace: $namespace
  annotations:
    kubernetes.io/service-account.name: $account
EOF
        fi
        # The token controller fills the Secret in shortly after it is created.
        token=
        for _ in $(seq 30); do
            encoded=$("${kc[@]}" get secret "$secret" -n "$namespace" -o 'jsonpath={.data.token}')
            if [[ -n $encoded ]]; then
                token=$(printf '%s' "$encoded" | base64 -d)
                break
            fi
            sleep 1
        done
        if [[ -z $token ]]; then
            echo "$0: Secret $namespace/$secret has no token after 30 s" >&2
            exit 1
        fi
        ;;
esac

umask 077
tmp=$(mktemp "$output.XXXXXX")
trap 'rm -f "$tmp"' EXIT
cat >"$tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kubernetes
  cluster:
    server: $server
    certificate-authority-data: $ca_data
users:
- name: $account
  user:
    token: $token
contexts:
- name: $account@kubernetes
  context:
    cluster: kubernetes
    user: $account
current-context: $account@kubernetes
EOF
mv "$tmp" "$output"
trap - EXIT

if [[ $mode == token ]]; then
    # The expiry is the "exp" claim of the JWT; show it so the renewal can be planned.
    claims=$(printf '%s' "$token" | cut -d. -f2 | tr '_-' '/+')
    while (( ${#claims} % 4 )); do claims+="="; done
    exp=$(printf '%s' "$claims" | base64 -d 2>/dev/null | sed -n 's/.*"exp":\([0-9]*\).*/\1/p')
    if [[ -n $exp ]]; then
        echo "wrote $output for $namespace/$account; the token expires $(date -u -d "@$exp" '+%Y-%m-%dT%H:%M:%SZ')" >&2
    else
        echo "wrote $output for $namespace/$account; the token expires after at most $duration" >&2
    fi
else
    echo "wrote $output for $namespace/$account; the token lasts until Secret $namespace/$secret is deleted" >&2
fi
