//! The nightly CronJob running `shipper retention`: nothing else deletes old daily
//! indices (ILM is missing from the OSS 7.x builds and from OpenSearch), so without it
//! the Elasticsearch volumes fill up.

use super::common::{self, labels, meta};
use super::security::{self, Security};
use super::{es_url, Plan};
use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

pub const NAME: &str = "shipper-retention";
/// 00:30 every night, in the controller manager's time zone (UTC on nearly every
/// cluster): shortly after the daily indices roll over.
pub const SCHEDULE: &str = "30 0 * * *";
/// The distroless image's `nonroot` user.
const NONROOT_UID: i64 = 65_532;

pub fn cron_job(plan: &Plan, security: Option<&Security>) -> CronJob {
    let l = labels(NAME, "retention");
    let mut args = vec![
        "retention".to_owned(),
        "--keep-days".to_owned(),
        plan.retention_days.to_string(),
        "--es-url".to_owned(),
        es_url(plan),
        "--index-prefix".to_owned(),
        plan.index_prefix.clone(),
    ];
    // A route template's indices: its pattern (`logs-*`) owns them.
    if let Some(Ok(t)) = plan
        .index_route
        .as_deref()
        .map(crate::index::route::Template::parse)
    {
        args.extend(["--index-prefix".to_owned(), t.pattern()]);
    }
    let (volumes, mounts) = if security.is_some() {
        args.extend([
            "--es-ca-file".to_owned(),
            security::CLIENT_CA_FILE.to_owned(),
            "--es-username".to_owned(),
            security::SHIPPER_USER.to_owned(),
            "--es-password-file".to_owned(),
            security::CLIENT_PASSWORD_FILE.to_owned(),
        ]);
        let (v, m) = security::client_volumes();
        (Some(v), Some(m))
    } else {
        (None, None)
    };
    let container = Container {
        name: "retention".into(),
        image: Some(common::image(&plan.agent_image, plan.registry.as_deref())),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(args),
        resources: Some(common::resources("10m", common::mib(64))),
        security_context: Some(common::restricted(NONROOT_UID, true)),
        volume_mounts: mounts,
        ..Default::default()
    };
    CronJob {
        metadata: meta(NAME, &plan.namespace, l.clone()),
        spec: CronJobSpec {
            schedule: SCHEDULE.into(),
            concurrency_policy: Some("Forbid".into()),
            // A run missed while the controller was down still happens within the day.
            starting_deadline_seconds: Some(6 * 3600),
            successful_jobs_history_limit: Some(1),
            failed_jobs_history_limit: Some(3),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(l.clone()),
                    ..Default::default()
                }),
                spec: Some(JobSpec {
                    backoff_limit: Some(3),
                    active_deadline_seconds: Some(1800),
                    template: PodTemplateSpec {
                        metadata: Some(ObjectMeta {
                            labels: Some(l),
                            ..Default::default()
                        }),
                        spec: Some(PodSpec {
                            restart_policy: Some("OnFailure".into()),
                            enable_service_links: Some(false),
                            automount_service_account_token: Some(false),
                            // fsGroup: the Secret files are readable by the group.
                            security_context: Some(common::pod_security(Some(NONROOT_UID))),
                            containers: vec![container],
                            volumes,
                            ..Default::default()
                        }),
                    },
                    ..Default::default()
                }),
            },
            ..Default::default()
        },
        ..Default::default()
    }
}
