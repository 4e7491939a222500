//! The `tracing:` section: the sampler and the OTLP exporter. An exporter is a thread with
//! its queue; a generation whose export settings are those of the one before keeps its
//! exporter (queued spans are not lost on a reload), and a changed one starts anew (the
//! old thread sends what it has queued and ends with the last generation that holds it).

use super::Compiler;
use crate::config::{ConfigError, TracingConfig};
use crate::trace::Tracing;
use membrane_telemetry::{Attributes, ExportConfig, Exporter, Sampler};
use std::sync::Arc;
use std::time::Duration;

impl Compiler<'_> {
    pub(super) fn tracing(
        &self,
        t: Option<&TracingConfig>,
    ) -> Result<Option<Arc<Tracing>>, ConfigError> {
        let Some(t) = t else { return Ok(None) };
        if !(0.0..=1.0).contains(&t.sample_ratio) {
            return Err(self.err(
                &t.otlp_endpoint,
                "tracing.sample_ratio".into(),
                format!("{} is not between 0 and 1", t.sample_ratio),
            ));
        }
        let mut resource = vec![("service.name".to_owned(), t.service_name.clone())];
        if let Some(cell) = &t.cell {
            resource.push(("membrane.cell".to_owned(), cell.clone()));
        }
        let config = ExportConfig {
            endpoint: t.otlp_endpoint.value().clone(),
            resource,
            queue: t.queue_size.max(1),
            batch: t.batch_size.max(1),
            interval: t.flush_interval.0.max(Duration::from_millis(10)),
            timeout: Duration::from_secs(5),
        };
        let kept = self
            .prev
            .and_then(|p| p.tracing.as_ref())
            .filter(|p| p.exporter.config == config)
            .map(|p| p.exporter.clone());
        let exporter = match kept {
            Some(e) => e,
            None => Arc::new(
                Exporter::start(config, self.metrics.trace.clone()).map_err(|e| {
                    self.err(
                        &t.otlp_endpoint,
                        "tracing.otlp_endpoint".into(),
                        e.to_string(),
                    )
                })?,
            ),
        };
        Ok(Some(Arc::new(Tracing {
            sampler: Sampler::new(t.sample_ratio, t.always_sample_errors),
            exporter,
            jwt_subject: t.jwt_subject,
            cell: t.cell.as_deref().map_or_else(Attributes::default, |c| {
                Attributes::builder().str("membrane.cell", c).build()
            }),
        })))
    }
}
