//! When a failure cools a deployment down (LiteLLM's rules, plus half-open probing in `state`).

use std::time::Duration;

use super::state::MinuteCounts;
use crate::{config::RouterSettings, domain::ErrorClass};

/// Minimum requests in the minute before the failure-rate rule applies.
const MIN_REQUESTS_FOR_RATE: u32 = 5;

/// Decides whether the failure just recorded (`class`, with this minute's `counts`) cools the
/// deployment down:
/// - never for request faults (the request was bad, not the deployment), nor in a one-deployment
///   group (there is nowhere else to go; LiteLLM behaves the same);
/// - `allowed_fails_policy` for the class, when set: more failures of that class than allowed;
/// - at once on 429, upstream authentication failure and 404 (the deployment is unusable now);
/// - `allowed_fails`, when set: more failures in the minute than allowed;
/// - otherwise when more than half of the minute's requests failed, with at least 5 requests.
pub fn should_cool_down(
    class: ErrorClass,
    counts: MinuteCounts,
    group_size: usize,
    s: &RouterSettings,
) -> bool {
    if s.disable_cooldowns || class.is_request_fault() || class == ErrorClass::Unsupported || group_size <= 1
    {
        return false;
    }
    if let Some(allowed) = s.allowed_fails_policy.get(class) {
        return counts.class_failures > allowed;
    }
    if matches!(
        class,
        ErrorClass::RateLimited | ErrorClass::Authentication | ErrorClass::NotFound
    ) {
        return true;
    }
    if let Some(allowed) = s.allowed_fails
        && counts.failures > allowed
    {
        return true;
    }
    let total = counts.successes + counts.failures;
    total >= MIN_REQUESTS_FOR_RATE && counts.failures * 2 > total
}

/// A stream that broke after its first chunk (an upstream error, a cut, silence past the idle
/// timeout): its caller could not be moved to another deployment, so, unlike a failed attempt
/// (which the next deployment absorbs), one break is enough to cool the deployment down, unless
/// `allowed_fails` / `allowed_fails_policy` allow more. (At first chunk the stream was booked a
/// success, so the failure-rate rule alone would never see more than half of them fail.)
pub fn should_cool_down_after_break(
    class: ErrorClass,
    counts: MinuteCounts,
    group_size: usize,
    s: &RouterSettings,
) -> bool {
    if s.disable_cooldowns || class.is_request_fault() || class == ErrorClass::Unsupported || group_size <= 1
    {
        return false;
    }
    match (s.allowed_fails_policy.get(class), s.allowed_fails) {
        (Some(allowed), _) => counts.class_failures > allowed,
        (None, Some(allowed)) => counts.failures > allowed,
        (None, None) => true,
    }
}

/// How long: the deployment's `cooldown_time`, stretched to a rate limit's Retry-After.
pub fn cooldown_for(class: ErrorClass, base: Duration, retry_after: Option<Duration>) -> Duration {
    match (class, retry_after) {
        (ErrorClass::RateLimited, Some(r)) => base.max(r),
        _ => base,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn settings(extra: &str) -> RouterSettings {
        let yaml = format!(
            "model_list:\n  - {{model_name: g, litellm_params: {{model: gpt-4o, mock_response: x}}}}\n{extra}"
        );
        Config::parse(&yaml, &|_| None).unwrap().router
    }

    fn counts(successes: u32, failures: u32) -> MinuteCounts {
        MinuteCounts {
            successes,
            failures,
            class_failures: failures,
        }
    }

    #[test]
    fn litellm_rules() {
        let s = settings("");
        use ErrorClass::*;
        assert!(
            should_cool_down(RateLimited, counts(100, 1), 2, &s),
            "429 cools down at once"
        );
        assert!(should_cool_down(Authentication, counts(100, 1), 2, &s));
        assert!(should_cool_down(NotFound, counts(100, 1), 2, &s));
        assert!(
            !should_cool_down(RateLimited, counts(0, 1), 1, &s),
            "never the only deployment"
        );
        assert!(
            !should_cool_down(BadRequest, counts(0, 50), 2, &s),
            "request faults never"
        );
        assert!(
            !should_cool_down(ServerError, counts(2, 2), 2, &s),
            "under 5 requests"
        );
        assert!(
            !should_cool_down(ServerError, counts(3, 3), 2, &s),
            "exactly half is not over half"
        );
        assert!(
            should_cool_down(ServerError, counts(2, 3), 2, &s),
            "over half of 5"
        );
        assert!(!should_cool_down(Timeout, counts(95, 5), 2, &s));
    }

    #[test]
    fn a_broken_stream_cools_down_at_once_unless_fails_are_allowed() {
        use ErrorClass::*;
        let s = settings("");
        assert!(should_cool_down_after_break(Timeout, counts(100, 1), 2, &s));
        assert!(should_cool_down_after_break(ServerError, counts(100, 1), 2, &s));
        assert!(
            !should_cool_down_after_break(Timeout, counts(0, 1), 1, &s),
            "never the only one"
        );
        assert!(
            !should_cool_down_after_break(ContentPolicy, counts(0, 1), 2, &s),
            "request faults never"
        );
        let allowed = settings("router_settings: {allowed_fails: 2}\n");
        assert!(!should_cool_down_after_break(Timeout, counts(0, 2), 2, &allowed));
        assert!(should_cool_down_after_break(Timeout, counts(0, 3), 2, &allowed));
        let off = settings("router_settings: {disable_cooldowns: true}\n");
        assert!(!should_cool_down_after_break(Timeout, counts(0, 9), 2, &off));
    }

    #[test]
    fn allowed_fails_and_policy() {
        let s = settings(
            "router_settings: {allowed_fails: 2, allowed_fails_policy: {RateLimitErrorAllowedFails: 3}}\n",
        );
        assert!(!should_cool_down(ErrorClass::ServerError, counts(100, 2), 2, &s));
        assert!(should_cool_down(ErrorClass::ServerError, counts(100, 3), 2, &s));
        assert!(
            !should_cool_down(ErrorClass::RateLimited, counts(0, 3), 2, &s),
            "policy allows 3"
        );
        assert!(should_cool_down(ErrorClass::RateLimited, counts(0, 4), 2, &s));
        let off = settings("router_settings: {disable_cooldowns: true}\n");
        assert!(!should_cool_down(ErrorClass::RateLimited, counts(0, 9), 2, &off));
    }

    #[test]
    fn retry_after_stretches_rate_limit_cooldowns() {
        let base = Duration::from_secs(5);
        assert_eq!(
            cooldown_for(ErrorClass::RateLimited, base, Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
        assert_eq!(
            cooldown_for(ErrorClass::RateLimited, base, Some(Duration::from_secs(1))),
            base
        );
        assert_eq!(
            cooldown_for(ErrorClass::ServerError, base, Some(Duration::from_secs(30))),
            base
        );
    }
}
