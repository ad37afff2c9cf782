//! Kibana (same version as Elasticsearch, `ELASTICSEARCH_HOSTS` — `ELASTICSEARCH_URL` is
//! ignored since 7.0), its Service, and the Job that creates the `<prefix>-*` data view
//! through the saved-objects API so logs are visible without any clicking.

use super::common::{self, env, env_secret, labels, meta, selector};
use super::elasticsearch::ELASTIC_UID;
use super::security::{self, Security};
use super::{doc, es_url, Document, ManifestError, Plan, Version, KIBANA_PORT};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, HTTPGetAction, PodSpec, PodTemplateSpec, Probe, Service, ServicePort,
    ServiceSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

pub const NAME: &str = "kibana";
/// Memory of the Kibana container; Node's heap is capped below it so the container is
/// never OOM-killed by its own garbage collector's laziness.
const MEMORY_MIB: u32 = 1024;
const NODE_HEAP_MIB: u32 = 768;

pub fn image(plan: &Plan, version: Version) -> String {
    common::image(
        &format!("docker.elastic.co/kibana/kibana:{version}"),
        plan.registry.as_deref(),
    )
}

/// Kibana's address inside the cluster.
pub fn url(plan: &Plan) -> String {
    format!("http://{NAME}.{}.svc:{KIBANA_PORT}", plan.namespace)
}

/// Kibana's container (and the volumes it mounts): Elasticsearch's address, and with
/// security its credentials and CA.
fn container(
    plan: &Plan,
    version: Version,
    security: Option<&Security>,
) -> (Container, Vec<Volume>) {
    let mut env_vars = vec![
        env("ELASTICSEARCH_HOSTS", es_url(plan)),
        env(
            "NODE_OPTIONS",
            format!("--max-old-space-size={NODE_HEAP_MIB}"),
        ),
    ];
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    if security.is_some() {
        env_vars.extend([
            // 8.x refuses the `elastic` superuser for its own connection.
            env("ELASTICSEARCH_USERNAME", "kibana_system"),
            env_secret(
                "ELASTICSEARCH_PASSWORD",
                security::CREDENTIALS_SECRET,
                security::KIBANA_PASSWORD_KEY,
            ),
            env(
                "ELASTICSEARCH_SSL_CERTIFICATEAUTHORITIES",
                "/usr/share/kibana/config/certs/ca.crt",
            ),
            // Lets the readiness probe read /api/status without a login.
            env("STATUS_ALLOWANONYMOUS", "true"),
        ]);
        volumes.push(common::secret_volume(
            "certs",
            security::CERTS_SECRET,
            &[("ca.crt", "ca.crt")],
        ));
        mounts.push(common::mount(
            "certs",
            "/usr/share/kibana/config/certs",
            true,
        ));
    }
    let container = Container {
        name: NAME.into(),
        image: Some(image(plan, version)),
        image_pull_policy: Some("IfNotPresent".into()),
        env: Some(env_vars),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: KIBANA_PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        // Kibana may take minutes to start (migrations, 7.x's optimizer); then it is
        // alive while it accepts connections and ready while /api/status says available.
        startup_probe: Some(common::tcp_probe("http", 10, 30)),
        liveness_probe: Some(common::tcp_probe("http", 20, 3)),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/api/status".into()),
                port: IntOrString::String("http".into()),
                ..Default::default()
            }),
            period_seconds: Some(10),
            timeout_seconds: Some(5),
            failure_threshold: Some(3),
            ..Default::default()
        }),
        resources: Some(common::resources("200m", common::mib(MEMORY_MIB))),
        security_context: Some(common::restricted(ELASTIC_UID, false)),
        volume_mounts: if mounts.is_empty() {
            None
        } else {
            Some(mounts)
        },
        ..Default::default()
    };
    (container, volumes)
}

pub fn documents(
    plan: &Plan,
    version: Version,
    security: Option<&Security>,
) -> Result<Vec<Document>, ManifestError> {
    let l = labels(NAME, "kibana");
    let (container, volumes) = container(plan, version, security);
    let deployment = Deployment {
        metadata: meta(NAME, &plan.namespace, l.clone()),
        spec: DeploymentSpec {
            replicas: Some(1),
            selector: selector(NAME),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(l.clone()),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    enable_service_links: Some(false),
                    automount_service_account_token: Some(false),
                    security_context: Some(common::pod_security(Some(ELASTIC_UID))),
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
        },
        ..Default::default()
    };
    let service = Service {
        metadata: meta(NAME, &plan.namespace, l),
        spec: Some(ServiceSpec {
            type_: Some(plan.kibana_service_type.as_str().into()),
            selector: Some(common::selector_labels(NAME)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: KIBANA_PORT,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok(vec![doc(&deployment)?, doc(&service)?])
}

/// Waits for Kibana, then creates (or overwrites) the data view and makes it the
/// default. `index-pattern` is the saved-object type of data views in 7.x and 8.x alike.
const DATA_VIEW_SCRIPT: &str = r#"set -eu
kb() {
  if [ -n "${ELASTIC_PASSWORD:-}" ]; then
    curl -fsS --max-time 30 -u "elastic:$ELASTIC_PASSWORD" -H 'kbn-xsrf: true' -H 'Content-Type: application/json' "$@"
  else
    curl -fsS --max-time 30 -H 'kbn-xsrf: true' -H 'Content-Type: application/json' "$@"
  fi
}
i=0
until kb -o /dev/null "$KIBANA_URL/api/status"; do
  i=$((i+1))
  if [ "$i" -ge 120 ]; then echo "Kibana did not become available at $KIBANA_URL" >&2; exit 1; fi
  sleep 10
done
kb -X POST "$KIBANA_URL/api/saved_objects/index-pattern/$DATA_VIEW_ID?overwrite=true" \
  -d "{\"attributes\":{\"title\":\"$INDEX_PATTERN\",\"timeFieldName\":\"@timestamp\"}}"
echo
kb -X POST "$KIBANA_URL/api/kibana/settings" -d "{\"changes\":{\"defaultIndex\":\"$DATA_VIEW_ID\"}}" \
  || echo "could not make $INDEX_PATTERN the default data view (it exists; not fatal)"
echo
echo "data view $INDEX_PATTERN (time field @timestamp) ready"
"#;

/// The one-shot Job that creates the data view.
pub fn data_view_job(plan: &Plan, version: Version, security: Option<&Security>) -> Job {
    let name = "kibana-data-view";
    let mut env_vars = vec![
        env("KIBANA_URL", url(plan)),
        env("INDEX_PATTERN", plan.index_patterns.join(",")),
        env("DATA_VIEW_ID", plan.index_prefix.clone()),
    ];
    if security.is_some() {
        env_vars.push(env_secret(
            "ELASTIC_PASSWORD",
            security::CREDENTIALS_SECRET,
            security::ELASTIC_PASSWORD_KEY,
        ));
    }
    // The Kibana image: already pulled for Kibana, and it has curl.
    let container = Container {
        name: "create-data-view".into(),
        image: Some(image(plan, version)),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec!["sh".into(), "-c".into(), DATA_VIEW_SCRIPT.into()]),
        env: Some(env_vars),
        resources: Some(common::resources("10m", common::mib(64))),
        security_context: Some(common::restricted(ELASTIC_UID, true)),
        ..Default::default()
    };
    security::one_shot_job(
        name,
        plan,
        labels(name, "kibana"),
        container,
        Vec::new(),
        ELASTIC_UID,
    )
}
