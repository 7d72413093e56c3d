//! Faults on demand, per vendor kind: errors, latency, lost answers, throttling, outages. Set at
//! run time through `POST /_emulator/faults` or [`super::EmulatorState::set_faults`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::VendorKind;

/// The emulated vendor kinds, in the order `GET /_emulator/faults` shows them.
const KINDS: [VendorKind; 4] =
    [VendorKind::AliyunCdn, VendorKind::AliyunEsa, VendorKind::VolcengineCdn, VendorKind::TencentCdn];

/// What goes wrong for one vendor kind. The default is nothing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultSet {
    /// Fraction of calls refused as by a vendor in trouble (503 `ServiceUnavailable`, Volcengine
    /// `ServiceUnavailableTemp`, Tencent `InternalError`) before anything is done.
    pub error_rate: f64,
    /// Delay before every answer, in milliseconds.
    pub latency_ms: u64,
    /// Fraction of successful calls that are carried out (tasks, quota, ledger) and then answered
    /// by closing the connection without a response.
    pub drop_after_accept_rate: f64,
    /// Every authenticated call is throttled (`Throttling.User`, `FlowLimitExceeded`,
    /// `RequestLimitExceeded`).
    pub throttle: bool,
    /// Every call is refused as with `error_rate` 1.
    pub down: bool,
}

#[derive(Default)]
pub(super) struct Faults(BTreeMap<&'static str, FaultSet>);

impl Faults {
    pub fn set(&mut self, vendor: Option<VendorKind>, set: FaultSet) {
        for kind in KINDS.iter().filter(|k| vendor.map_or(true, |v| v == **k)) {
            self.0.insert(kind.as_str(), set.clone());
        }
    }

    pub fn get(&self, vendor: VendorKind) -> FaultSet {
        self.0.get(vendor.as_str()).cloned().unwrap_or_default()
    }

    /// `{"aliyun_cdn": {...}, "aliyun_esa": {...}}`.
    pub fn to_json(&self) -> Value {
        let map =
            KINDS.iter().map(|k| (k.as_str().to_string(), serde_json::to_value(self.get(*k)).unwrap_or_default()));
        Value::Object(map.collect())
    }
}

/// A `POST /_emulator/faults` body: a [`FaultSet`] plus an optional `vendor` (an emulated kind,
/// or `all`, the default). It replaces the faults of that scope; `{}` clears them.
#[derive(Debug)]
pub(super) struct FaultRequest {
    pub vendor: Option<VendorKind>,
    pub set: FaultSet,
}

impl FaultRequest {
    pub fn parse(body: &[u8]) -> Result<FaultRequest, String> {
        let mut value: Value = serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
        let object = value.as_object_mut().ok_or("body must be a JSON object")?;
        let vendor = match object.remove("vendor") {
            None => None,
            Some(Value::String(s)) if s == "all" => None,
            Some(Value::String(s)) => match s.parse::<VendorKind>() {
                Ok(kind) if KINDS.contains(&kind) => Some(kind),
                _ => {
                    return Err(format!(
                        "vendor must be aliyun_cdn, aliyun_esa, volcengine_cdn, tencent_cdn or all, not `{s}`"
                    ))
                }
            },
            Some(other) => return Err(format!("vendor must be a string, not {other}")),
        };
        let set: FaultSet = serde_json::from_value(value).map_err(|e| e.to_string())?;
        for (name, rate) in [("error_rate", set.error_rate), ("drop_after_accept_rate", set.drop_after_accept_rate)] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be between 0 and 1"));
            }
        }
        Ok(FaultRequest { vendor, set })
    }
}

/// True with probability `rate`; exactly 0 and 1 never consult the random generator, so tests
/// of those are deterministic.
pub(super) fn roll(rate: f64) -> bool {
    rate >= 1.0 || (rate > 0.0 && rand::random::<f64>() < rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_scoped_and_validated() {
        let req = FaultRequest::parse(br#"{"vendor":"aliyun_esa","down":true}"#).unwrap();
        assert_eq!(req.vendor, Some(VendorKind::AliyunEsa));
        assert!(req.set.down);
        assert_eq!(FaultRequest::parse(br#"{"latency_ms":5}"#).unwrap().vendor, None);
        assert!(FaultRequest::parse(br#"{"error_rate":2}"#).is_err());
        assert!(FaultRequest::parse(br#"{"vendor":"webhook"}"#).is_err());
        assert!(FaultRequest::parse(br#"{"typo":true}"#).is_err());

        let mut faults = Faults::default();
        faults.set(Some(VendorKind::AliyunEsa), req.set);
        assert!(faults.get(VendorKind::AliyunEsa).down);
        assert!(!faults.get(VendorKind::AliyunCdn).down);
        assert_eq!(faults.to_json()["aliyun_esa"]["down"], true);
    }
}
