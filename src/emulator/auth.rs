//! Who is calling: the request's signature checked with [`crate::sign`] against the configured
//! keys (the same key pairs serve every vendor), its time against the injected clock (15 minutes
//! either way for Alibaba, 5 for Tencent), and its nonce (Alibaba) against the nonces seen while
//! that signature could still be replayed.

use std::collections::{HashSet, VecDeque};

use chrono::TimeDelta;

use super::protocol::{ApiError, Call, VOLC_REGION, VOLC_SERVICE};
use super::EmulatorState;
use crate::clock::to_datetime;
use crate::sign::{acs3_verify, check_skew, rpc_verify, tc3_verify, volc_verify, Scheme, SignError};

/// Alibaba refuses signatures more than 15 minutes from its clock, and nonces reused within it.
const MAX_SKEW_MS: i64 = 15 * 60 * 1000;
/// Tencent refuses a `X-TC-Timestamp` more than 5 minutes off (`AuthFailure.SignatureExpire`).
const TC3_MAX_SKEW_MS: i64 = 5 * 60 * 1000;
/// Volcengine's allowed `X-Date` drift is not published; 15 minutes, as Alibaba (chosen).
const VOLC_MAX_SKEW_MS: i64 = 15 * 60 * 1000;

/// Checks the signature, then the time, then the nonce, and returns the access key id (the
/// account). The signature comes first so a forged request cannot burn a legitimate nonce.
pub(super) fn authenticate(state: &EmulatorState, call: &Call) -> Result<String, ApiError> {
    let lookup = |id: &str| state.keys.get(id).cloned();
    let verified = match call.scheme {
        Scheme::AliyunRpc => rpc_verify(&call.parts, lookup),
        Scheme::Volc => volc_verify(&call.parts, lookup),
        Scheme::Tc3 => tc3_verify(&call.parts, lookup),
        Scheme::Acs3 => acs3_verify(&call.parts, lookup),
    }
    .map_err(|e| ApiError::from_sign(&e, call.scheme))?;
    // A signature made for another service (or Volcengine region) is not valid here.
    let scope_ok = match (call.scheme, verified.scope.as_deref()) {
        (Scheme::Volc, Some(scope)) => scope.ends_with(&format!("/{VOLC_REGION}/{VOLC_SERVICE}/request")),
        (Scheme::Tc3, Some(scope)) => scope.ends_with("/cdn/tc3_request"),
        _ => true,
    };
    if !scope_ok {
        return Err(ApiError::from_sign(&SignError::SignatureMismatch, call.scheme));
    }
    let now = state.now_ms();
    let skew = match call.scheme {
        Scheme::Tc3 => TC3_MAX_SKEW_MS,
        Scheme::Volc => VOLC_MAX_SKEW_MS,
        _ => MAX_SKEW_MS,
    };
    check_skew(verified.signed_at, to_datetime(now), TimeDelta::milliseconds(skew))
        .map_err(|e| ApiError::from_sign(&e, call.scheme))?;
    if let Some(nonce) = &verified.nonce {
        let replayable_until = verified.signed_at.timestamp_millis() + MAX_SKEW_MS;
        state
            .books()
            .nonces
            .claim(&verified.access_key_id, nonce, replayable_until, now)
            .map_err(|e| ApiError::from_sign(&e, call.scheme))?;
    }
    Ok(verified.access_key_id)
}

/// Nonces per access key, each kept until its signature's time falls out of the skew window:
/// after that the skew check refuses a replay on its own.
#[derive(Default)]
pub(super) struct NonceCache {
    seen: HashSet<(String, String)>,
    order: VecDeque<(i64, (String, String))>,
}

impl NonceCache {
    fn claim(&mut self, account: &str, nonce: &str, keep_until: i64, now: i64) -> Result<(), SignError> {
        // Expiries are nearly in arrival order; an entry stuck behind a later one only costs
        // memory until that one expires.
        while self.order.front().is_some_and(|(until, _)| *until < now) {
            if let Some((_, key)) = self.order.pop_front() {
                self.seen.remove(&key);
            }
        }
        let key = (account.to_string(), nonce.to_string());
        if !self.seen.insert(key.clone()) {
            return Err(SignError::NonceReused);
        }
        self.order.push_back((keep_until, key));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_reuse_is_refused_until_the_signature_expires() {
        let mut cache = NonceCache::default();
        assert_eq!(cache.claim("ak", "n1", 1_000, 0), Ok(()));
        assert_eq!(cache.claim("ak", "n1", 1_000, 500), Err(SignError::NonceReused));
        assert_eq!(cache.claim("other", "n1", 1_000, 500), Ok(()));
        assert_eq!(cache.claim("ak", "n1", 3_000, 1_001), Ok(()));
    }
}
