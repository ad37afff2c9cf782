//! `--es-security` (8.x): a CA and a node certificate for HTTP and transport TLS, random
//! passwords for `elastic`, `kibana_system` and a least-privilege `shipper` user, the
//! Secrets holding them, and a Job that sets the passwords and creates the user.
//!
//! Like Elastic's own Helm chart, the certificates and passwords are generated when the
//! manifests are, so the output holds secrets: generate once, keep the file, re-apply the
//! same file. Regenerating creates new credentials; Elasticsearch keeps the users it
//! already has (the setup Job must then run again to update them).

use super::common::{self, env, env_secret, labels, meta};
use super::{doc, es_url, Document, ManifestError, Plan, Version, ES_SERVICE};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, PodSpec, PodTemplateSpec, Secret, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use std::collections::BTreeMap;

/// Opaque Secret with the three passwords.
pub const CREDENTIALS_SECRET: &str = "elasticsearch-credentials";
/// `kubernetes.io/tls` Secret: `tls.crt`, `tls.key` (the nodes' certificate) and `ca.crt`.
pub const CERTS_SECRET: &str = "elasticsearch-certs";
pub const ELASTIC_PASSWORD_KEY: &str = "elastic-password";
pub const KIBANA_PASSWORD_KEY: &str = "kibana-system-password";
pub const SHIPPER_PASSWORD_KEY: &str = "shipper-password";
/// The agent's and the retention job's user (and role).
pub const SHIPPER_USER: &str = "shipper";
/// Where the agent and the retention job find the CA and their password.
pub const CLIENT_CA_FILE: &str = "/etc/shipper/es-ca/ca.crt";
pub const CLIENT_PASSWORD_FILE: &str = "/etc/shipper/es-credentials/password";
/// The node certificate's lifetime. Renewal = regenerate and re-apply the Secret.
const CERT_DAYS: i64 = 5 * 365;
/// The CA's lifetime.
const CA_DAYS: i64 = 10 * 365;
/// Generated passwords: 24 characters of [A-Za-z0-9] (≈143 bits), safe inside JSON and
/// shell strings without any quoting.
const PASSWORD_LEN: usize = 24;

/// Generated secrets.
pub struct Security {
    pub elastic_password: String,
    pub kibana_password: String,
    pub shipper_password: String,
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

fn password() -> Result<String, ManifestError> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(PASSWORD_LEN);
    while out.len() < PASSWORD_LEN {
        let mut buf = [0u8; 64];
        getrandom::fill(&mut buf).map_err(|e| ManifestError::Random(e.to_string()))?;
        // Rejection sampling: 248 = 4 × 62, so every character is equally likely.
        for b in buf {
            if b < 248 && out.len() < PASSWORD_LEN {
                out.push(ALPHABET[usize::from(b % 62)] as char);
            }
        }
    }
    Ok(out)
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = chrono::Utc::now().date_naive();
    let date = |d: chrono::NaiveDate| {
        use chrono::Datelike;
        // Month and day of a real date always fit a u8.
        rcgen::date_time_ymd(d.year(), d.month() as u8, d.day() as u8)
    };
    params.not_before = date(now - chrono::Days::new(1));
    params.not_after = date(now + chrono::Days::new(days.unsigned_abs()));
}

impl Security {
    pub fn generate(plan: &Plan) -> Result<Security, ManifestError> {
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "shipper EFK CA");
        ca.distinguished_name = dn;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut ca, CA_DAYS);
        let ca_cert = ca.self_signed(&ca_key)?;

        let ns = &plan.namespace;
        let mut names = Vec::new();
        for base in [ES_SERVICE.to_owned(), format!("*.{ES_SERVICE}")] {
            names.push(base.clone());
            names.push(format!("{base}.{ns}"));
            names.push(format!("{base}.{ns}.svc"));
            names.push(format!("{base}.{ns}.svc.cluster.local"));
        }
        names.push("localhost".into());
        names.push("127.0.0.1".into());
        let node_key = KeyPair::generate()?;
        let mut node = CertificateParams::new(names)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, super::ES_STATEFULSET);
        node.distinguished_name = dn;
        node.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        // Transport TLS authenticates both ends with the same certificate.
        node.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        validity(&mut node, CERT_DAYS);
        let issuer = Issuer::new(ca, ca_key);
        let node_cert = node.signed_by(&node_key, &issuer)?;
        Ok(Security {
            elastic_password: password()?,
            kibana_password: password()?,
            shipper_password: password()?,
            ca_pem: ca_cert.pem(),
            cert_pem: node_cert.pem(),
            key_pem: node_key.serialize_pem(),
        })
    }

    /// The Secrets and the setup Job.
    pub fn documents(&self, plan: &Plan, version: Version) -> Result<Vec<Document>, ManifestError> {
        let l = labels("elasticsearch", "security");
        let credentials = Secret {
            metadata: meta(CREDENTIALS_SECRET, &plan.namespace, l.clone()),
            type_: Some("Opaque".into()),
            string_data: Some(BTreeMap::from([
                (
                    ELASTIC_PASSWORD_KEY.to_owned(),
                    self.elastic_password.clone(),
                ),
                (KIBANA_PASSWORD_KEY.to_owned(), self.kibana_password.clone()),
                (
                    SHIPPER_PASSWORD_KEY.to_owned(),
                    self.shipper_password.clone(),
                ),
            ])),
            ..Default::default()
        };
        let certs = Secret {
            metadata: meta(CERTS_SECRET, &plan.namespace, l),
            type_: Some("kubernetes.io/tls".into()),
            string_data: Some(BTreeMap::from([
                ("ca.crt".to_owned(), self.ca_pem.clone()),
                ("tls.crt".to_owned(), self.cert_pem.clone()),
                ("tls.key".to_owned(), self.key_pem.clone()),
            ])),
            ..Default::default()
        };
        Ok(vec![
            doc(&credentials)?,
            doc(&certs)?,
            doc(&setup_job(plan, version))?,
        ])
    }
}

/// The role of the `shipper` user: write and delete its own indices, install its index
/// template, read cluster health. Nothing else.
pub fn shipper_role(index_patterns: &[String]) -> serde_json::Value {
    serde_json::json!({
        "cluster": ["monitor", "manage_index_templates"],
        "indices": [{
            "names": index_patterns,
            "privileges": ["create_doc", "create_index", "auto_configure", "view_index_metadata", "delete_index"],
        }],
    })
}

/// Waits for the cluster, then sets `kibana_system`'s password and creates the `shipper`
/// role and user. Idempotent: re-running it sets the same values.
const SETUP_SCRIPT: &str = r#"set -eu
es() { curl -fsS --max-time 30 --cacert /certs/ca.crt -u "elastic:$ELASTIC_PASSWORD" -H 'Content-Type: application/json' "$@"; }
i=0
until es -o /dev/null "$ES_URL/_cluster/health?wait_for_status=yellow&timeout=10s"; do
  i=$((i+1))
  if [ "$i" -ge 120 ]; then echo "Elasticsearch did not become available at $ES_URL" >&2; exit 1; fi
  sleep 10
done
es -X POST "$ES_URL/_security/user/kibana_system/_password" -d "{\"password\":\"$KIBANA_SYSTEM_PASSWORD\"}"
es -X PUT "$ES_URL/_security/role/$SHIPPER_USER" -d "$SHIPPER_ROLE"
es -X PUT "$ES_URL/_security/user/$SHIPPER_USER" -d "{\"password\":\"$SHIPPER_PASSWORD\",\"roles\":[\"$SHIPPER_USER\"]}"
echo
echo "kibana_system password set; user $SHIPPER_USER ready"
"#;

fn setup_job(plan: &Plan, version: Version) -> Job {
    let name = "elasticsearch-setup";
    let container = Container {
        name: "setup".into(),
        image: Some(super::elasticsearch::image(plan, version)),
        command: Some(vec!["sh".into(), "-c".into(), SETUP_SCRIPT.into()]),
        env: Some(vec![
            env("ES_URL", es_url(plan)),
            env("SHIPPER_USER", SHIPPER_USER),
            env(
                "SHIPPER_ROLE",
                shipper_role(&plan.index_patterns).to_string(),
            ),
            env_secret("ELASTIC_PASSWORD", CREDENTIALS_SECRET, ELASTIC_PASSWORD_KEY),
            env_secret(
                "KIBANA_SYSTEM_PASSWORD",
                CREDENTIALS_SECRET,
                KIBANA_PASSWORD_KEY,
            ),
            env_secret("SHIPPER_PASSWORD", CREDENTIALS_SECRET, SHIPPER_PASSWORD_KEY),
        ]),
        resources: Some(common::resources("10m", common::mib(64))),
        security_context: Some(common::restricted(1000, true)),
        volume_mounts: Some(vec![common::mount("certs", "/certs", true)]),
        ..Default::default()
    };
    one_shot_job(
        name,
        plan,
        labels(name, "security"),
        container,
        vec![common::secret_volume(
            "certs",
            CERTS_SECRET,
            &[("ca.crt", "ca.crt")],
        )],
        1000,
    )
}

/// A Job that runs `container` once to completion (retrying on failure), and is cleaned
/// up a day after it finished (re-applying the manifests then runs it again, which the
/// jobs here allow: they are idempotent).
pub fn one_shot_job(
    name: &str,
    plan: &Plan,
    labels: BTreeMap<String, String>,
    container: Container,
    volumes: Vec<Volume>,
    fs_group: i64,
) -> Job {
    Job {
        metadata: meta(name, &plan.namespace, labels.clone()),
        spec: Some(JobSpec {
            backoff_limit: Some(6),
            active_deadline_seconds: Some(3600),
            ttl_seconds_after_finished: Some(86_400),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("OnFailure".into()),
                    enable_service_links: Some(false),
                    automount_service_account_token: Some(false),
                    security_context: Some(common::pod_security(Some(fs_group))),
                    containers: vec![container],
                    volumes: if volumes.is_empty() {
                        None
                    } else {
                        Some(volumes)
                    },
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Volumes and mounts giving a client (the agent, the retention job) the CA at
/// [`CLIENT_CA_FILE`] and the `shipper` password at [`CLIENT_PASSWORD_FILE`].
pub fn client_volumes() -> (Vec<Volume>, Vec<VolumeMount>) {
    (
        vec![
            common::secret_volume("es-ca", CERTS_SECRET, &[("ca.crt", "ca.crt")]),
            common::secret_volume(
                "es-credentials",
                CREDENTIALS_SECRET,
                &[(SHIPPER_PASSWORD_KEY, "password")],
            ),
        ],
        vec![
            common::mount("es-ca", "/etc/shipper/es-ca", true),
            common::mount("es-credentials", "/etc/shipper/es-credentials", true),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_long_random_and_plain() {
        let a = password().unwrap();
        let b = password().unwrap();
        assert_eq!(a.len(), PASSWORD_LEN);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn client_paths_match_mounts() {
        let (_, mounts) = client_volumes();
        assert!(CLIENT_CA_FILE.starts_with(&format!("{}/", mounts[0].mount_path)));
        assert!(CLIENT_PASSWORD_FILE.starts_with(&format!("{}/", mounts[1].mount_path)));
    }
}
