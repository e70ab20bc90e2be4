#!/bin/sh
# Creates, once, every Secret the manifests under deploy/kubernetes/ read, with fresh random keys
# (docs/kubernetes.md, "Secrets"). Nothing of it is committed anywhere.
#
# Run it from the repository's root, where `temoin` is installed (it derives the audit log's
# writer keys), with kubectl pointed at the cluster:
#   DASHBOARD_OIDC_CLIENT_SECRET=... BACKUP_ACCESS_KEY_ID=... BACKUP_SECRET_ACCESS_KEY=... \
#     deploy/kubernetes/create-secrets.sh
# NAMESPACE (temoin) is where they go; DRY_RUN=1 prints them as YAML instead of creating them;
# TEMOIN is how to run the `temoin` command (.venv/bin/temoin).
#
# Before anything else, copy the printed keys' Secrets somewhere offline (`kubectl get secret
# -o yaml`): without VAULT_KEK no clip can ever be read again, and without the signing keys no
# new head, receipt or report can be signed under the same identity.
set -eu

NAMESPACE=${NAMESPACE:-temoin}
TEMOIN=${TEMOIN:-.venv/bin/temoin}
: "${DASHBOARD_OIDC_CLIENT_SECRET:?the dashboard client's secret, from the identity provider}"
: "${BACKUP_ACCESS_KEY_ID:?the backup store's access key (not the recordings' store)}"
: "${BACKUP_SECRET_ACCESS_KEY:?the backup store's secret key}"

key() { head -c 32 /dev/urandom | base64; }                 # a 32-byte key, as the settings want
hex() { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; }  # safe in a URL and a shell

create() {
    if [ "${DRY_RUN:-}" = 1 ]; then
        kubectl create secret "$@" --namespace "$NAMESPACE" --dry-run=client -o yaml
        echo ---
    else
        kubectl create secret "$@" --namespace "$NAMESPACE"
    fi
}

ingest_entry=$(key)
vault_entry=$(key)
reporting_entry=$(key)
writer_keys="$(INGEST_AUDIT_ENTRY_KEY=$ingest_entry $TEMOIN audit writer-key ingest),$(
    VAULT_AUDIT_ENTRY_KEY=$vault_entry $TEMOIN audit writer-key vault),$(
    REPORTING_AUDIT_ENTRY_KEY=$reporting_entry $TEMOIN audit writer-key reporting)"

create generic temoin-service-token --from-literal=SERVICE_TOKEN="$(hex)"
create generic temoin-ingest-keys \
    --from-literal=INGEST_TOKEN_SECRET="$(hex)" \
    --from-literal=INGEST_RECEIPT_KEY="$(key)" \
    --from-literal=INGEST_AUDIT_ENTRY_KEY="$ingest_entry"
create generic temoin-vault-keys \
    --from-literal=VAULT_AUDIT_SIGNING_KEY="$(key)" \
    --from-literal=VAULT_AUDIT_ENTRY_KEY="$vault_entry" \
    --from-literal=VAULT_AUDIT_WRITER_KEYS="$writer_keys" \
    --from-literal=VAULT_KEK="$(key)" \
    --from-literal=VAULT_MEDIA_KEY="$(key)"
create generic temoin-reporting-keys \
    --from-literal=REPORTING_SIGNING_KEY_SEED="$(key)" \
    --from-literal=REPORTING_AUDIT_ENTRY_KEY="$reporting_entry"
create generic temoin-dashboard-keys \
    --from-literal=DASHBOARD_OIDC_CLIENT_SECRET="$DASHBOARD_OIDC_CLIENT_SECRET" \
    --from-literal=DASHBOARD_SESSION_SECRET="$(hex)"

# The services' and the dashboard's database logins (CloudNativePG sets their passwords from
# these Secrets); the owner's, temoin-db-app, is made by CloudNativePG itself.
create generic temoin-db-services --type=kubernetes.io/basic-auth \
    --from-literal=username=temoin_app --from-literal=password="$(hex)"
create generic temoin-db-dashboard --type=kubernetes.io/basic-auth \
    --from-literal=username=temoin_dashboard_app --from-literal=password="$(hex)"
create generic temoin-db-backups-s3 \
    --from-literal=ACCESS_KEY_ID="$BACKUP_ACCESS_KEY_ID" \
    --from-literal=ACCESS_SECRET_KEY="$BACKUP_SECRET_ACCESS_KEY"

# The store's administrator, twice: as the MinIO Operator reads it (config.env) and as the
# setup jobs read it. Only those jobs hold it; the services have their own users below.
root_user="temoin-admin-$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')"
root_password=$(hex)
create generic temoin-store-env --from-literal=config.env="export MINIO_ROOT_USER=$root_user
export MINIO_ROOT_PASSWORD=$root_password"
create generic temoin-store-root \
    --from-literal=MINIO_ROOT_USER="$root_user" --from-literal=MINIO_ROOT_PASSWORD="$root_password"
create generic temoin-store-users \
    --from-literal=temoin-vault="$(hex)" --from-literal=temoin-readiness="$(hex)"
