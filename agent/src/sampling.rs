//! Head sampling by the OpenTelemetry environment (`OTEL_TRACES_SAMPLER`,
//! `OTEL_TRACES_SAMPLER_ARG`): `always_on` (the default), `always_off`, `traceidratio`, and
//! `parentbased_*` of each. A trace is kept or dropped whole, across every service of the host:
//!
//! - the ratio is decided from the trace id alone (its last 8 bytes against the ratio, as the
//!   SDKs do), so every span of a trace gets the same answer in every process, and the SDKs
//!   of instrumented processes agree with it;
//! - parent-based samplers follow the sampled flag of the `traceparent` a trace came in with
//!   (or an instrumented app's own), remembered per trace by the linker, and the root sampler
//!   for traces that started here.
//!
//! The decision is made at export: RED metrics count every span first, so they stay exact.

use anyhow::{Result, bail};

use crate::traceparent::TraceId;

#[derive(Clone, Debug, PartialEq)]
pub enum Sampler {
    AlwaysOn,
    AlwaysOff,
    /// Keeps this share of traces (0 to 1).
    Ratio(f64),
    /// Follows the remote parent's sampled flag; traces started here go to the inner sampler.
    ParentBased(Box<Sampler>),
}

impl Sampler {
    /// The sampler the environment asks for; a value it does not define is an error naming
    /// the ones it does.
    pub fn from_env() -> Result<Sampler> {
        let var = |name: &str| std::env::var(name).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        Self::parse(var("OTEL_TRACES_SAMPLER").as_deref(), var("OTEL_TRACES_SAMPLER_ARG").as_deref())
    }

    pub fn parse(name: Option<&str>, arg: Option<&str>) -> Result<Sampler> {
        let ratio = || -> Result<f64> {
            match arg {
                None => Ok(1.0),
                Some(a) => match a.parse::<f64>() {
                    Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                    _ => bail!("OTEL_TRACES_SAMPLER_ARG={a} is not a ratio; give a number from 0 to 1, e.g. 0.25"),
                },
            }
        };
        Ok(match name.unwrap_or("parentbased_always_on") {
            "always_on" => Sampler::AlwaysOn,
            "always_off" => Sampler::AlwaysOff,
            "traceidratio" => Sampler::Ratio(ratio()?),
            "parentbased_always_on" => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
            "parentbased_always_off" => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
            "parentbased_traceidratio" => Sampler::ParentBased(Box::new(Sampler::Ratio(ratio()?))),
            other => bail!(
                "OTEL_TRACES_SAMPLER={other} is not supported; use always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio"
            ),
        })
    }

    /// Whether the trace is kept; `remote`: the sampled flag it came in with, if it did.
    pub fn sampled(&self, trace_id: &TraceId, remote: Option<bool>) -> bool {
        match self {
            Sampler::AlwaysOn => true,
            Sampler::AlwaysOff => false,
            Sampler::Ratio(ratio) => {
                // The last 8 bytes, halved, against the ratio of 2^63, in integers: a ratio of
                // 1 keeps every id.
                let low = u64::from_be_bytes(trace_id[8..].try_into().unwrap_or([0; 8])) >> 1;
                low < (ratio * (1u64 << 63) as f64) as u64
            }
            Sampler::ParentBased(root) => remote.unwrap_or_else(|| root.sampled(trace_id, None)),
        }
    }

    /// Whether every trace is kept whatever its parent says (nothing to decide).
    pub fn keeps_all(&self) -> bool {
        *self == Sampler::AlwaysOn
    }

    /// Whether only a remote parent's unsampled flag can drop a trace (the default,
    /// `parentbased_always_on`): with no such flag seen, there is nothing to decide.
    pub fn drops_only_unsampled_parents(&self) -> bool {
        matches!(self, Sampler::ParentBased(root) if root.keeps_all())
    }

    pub fn describe(&self) -> String {
        match self {
            Sampler::AlwaysOn => "always_on".into(),
            Sampler::AlwaysOff => "always_off".into(),
            Sampler::Ratio(r) => format!("traceidratio {r}"),
            Sampler::ParentBased(root) => format!("parentbased ({})", root.describe()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(low: u64) -> TraceId {
        let mut t = [7u8; 16];
        t[8..].copy_from_slice(&low.to_be_bytes());
        t
    }

    #[test]
    fn the_environment_names_the_sampler() {
        assert_eq!(Sampler::parse(None, None).expect("default"), Sampler::ParentBased(Box::new(Sampler::AlwaysOn)));
        assert_eq!(Sampler::parse(Some("traceidratio"), Some("0.25")).expect("ratio"), Sampler::Ratio(0.25));
        assert_eq!(Sampler::parse(Some("parentbased_traceidratio"), None).expect("ratio"), Sampler::ParentBased(Box::new(Sampler::Ratio(1.0))));
        assert!(Sampler::parse(Some("traceidratio"), Some("2")).is_err());
        assert!(Sampler::parse(Some("jaeger_remote"), None).expect_err("undefined").to_string().contains("not supported"));
    }

    /// The ratio keeps that share of random trace ids, decided by the id alone.
    #[test]
    fn a_ratio_is_a_function_of_the_trace_id() {
        let quarter = Sampler::Ratio(0.25);
        assert!(quarter.sampled(&id(0), None) && !quarter.sampled(&id(u64::MAX), None));
        let kept = (0..10_000u64).filter(|i| quarter.sampled(&id(i.wrapping_mul(0x9E37_79B9_7F4A_7C15)), None)).count();
        assert!((2200..2800).contains(&kept), "{kept} of 10000");
        assert!(!Sampler::Ratio(0.0).sampled(&id(0), None));
        assert!(Sampler::Ratio(1.0).sampled(&id(u64::MAX), None));
    }

    #[test]
    fn parent_based_follows_the_remote_flag_then_its_root() {
        let s = Sampler::ParentBased(Box::new(Sampler::AlwaysOff));
        assert!(s.sampled(&id(1), Some(true)));
        assert!(!s.sampled(&id(1), Some(false)));
        assert!(!s.sampled(&id(1), None), "started here: the root sampler");
        assert!(!Sampler::ParentBased(Box::new(Sampler::AlwaysOn)).sampled(&id(1), Some(false)));
    }
}
