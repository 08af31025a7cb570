//! The gRPC services: ChatService and EmbeddingsService. Thin: authenticate, convert, route, convert.

use std::{pin::Pin, sync::Arc, time::Duration};

use futures_util::{Stream, StreamExt};
use tokio::time::Instant;
use tonic::{Request, Response, Status, metadata::MetadataMap};

use tracing::Instrument as _;

use super::{
    admission::{Admission, Quotas, Ticket},
    convert,
    error::ApiError,
    observe::{self, Scope},
    pipeline::{Call, ChatStream},
};
use crate::{
    auth::{Authenticator, Principal, manage::Manager},
    domain::ModelGroup,
    limits::Grant,
    proto as pb,
    router::{RouteError, RouteInfo, Router},
};

/// What every data-plane call needs before it is routed.
struct CallContext {
    principal: Principal,
    deadline: Option<Instant>,
}

impl CallContext {
    fn call<'a>(&'a self, request_id: &'a str) -> Call<'a> {
        Call {
            principal: &self.principal,
            request_id,
            deadline: self.deadline,
        }
    }
}

/// Shared by the data-plane services.
pub struct Gateway {
    pub router: Arc<Router>,
    pub auth: Arc<Authenticator>,
    pub keys: Arc<Manager>,
    pub quotas: Arc<Quotas>,
    pub control: Arc<crate::control::ControlPlane>,
    /// The response cache, when configured.
    pub cache: Option<Arc<crate::cache::ResponseCache>>,
    /// Request size bounds.
    pub limits: crate::config::RequestLimits,
}

/// A request as admission sees it (after decoding, before routing).
pub(super) struct Ask<'a> {
    pub request_id: &'a str,
    pub end_user: Option<&'a str>,
    pub prompt_tokens: &'a (dyn Fn() -> u64 + Sync),
    pub max_tokens: Option<u32>,
    /// A streamed call (counted against `max_streams_per_key`).
    pub stream: bool,
}

impl Gateway {
    /// Authenticates in its own span, and names the key and team (never the secret) on the
    /// request's span.
    pub(super) fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Principal, ApiError> {
        let principal = tracing::info_span!("auth", otel.name = "auth")
            .in_scope(|| self.auth.authenticate(authorization))?;
        if let Principal::Key(who) = &principal {
            let span = tracing::Span::current();
            span.record("switchboard.key.id", who.key.id.as_str());
            if let Some(t) = &who.key.team_id {
                span.record("switchboard.team.id", t.as_str());
            }
        }
        Ok(principal)
    }

    /// Admin calls need the master key (or an open gateway); a virtual key is refused.
    pub(super) fn require_admin(&self, authorization: Option<&[u8]>) -> Result<(), ApiError> {
        if self.auth.authenticate(authorization)?.is_admin() {
            Ok(())
        } else {
            Err(ApiError::NotAdmin)
        }
    }

    /// Applies the key's model aliases and allow-list.
    pub(super) fn authorize(&self, principal: &Principal, model: &mut ModelGroup) -> Result<(), ApiError> {
        if let Principal::Key(who) = principal {
            let resolved = who.resolve(model.as_str());
            if resolved != model.as_str() {
                *model = ModelGroup::new(resolved);
            }
            if !who.allows(model.as_str(), &self.router.table().access_groups) {
                return Err(ApiError::ModelNotAllowed {
                    model: model.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Reserves the request's worst case against every budget and limit that applies.
    pub(super) async fn admit(
        &self,
        principal: &Principal,
        model: &ModelGroup,
        ask: Ask<'_>,
    ) -> Result<Ticket, ApiError> {
        let table = self.router.table();
        let group = table
            .groups
            .get(model)
            .ok_or_else(|| RouteError::UnknownGroup(model.clone()))?;
        let span =
            tracing::info_span!("admission", otel.name = "admission", error.type = tracing::field::Empty);
        let admitted = self
            .quotas
            .admit(Admission {
                principal,
                request_id: ask.request_id,
                model: model.as_str(),
                group: Some(group),
                end_user: ask.end_user,
                prompt_tokens: ask.prompt_tokens,
                max_tokens: ask.max_tokens,
                stream: ask.stream,
            })
            .instrument(span.clone())
            .await;
        if let Err(e) = &admitted {
            span.record("error.type", e.reason());
        }
        admitted
    }

    fn context(&self, md: &MetadataMap) -> Result<CallContext, ApiError> {
        let principal = self.authenticate(md.get("authorization").map(|v| v.as_bytes()))?;
        Ok(CallContext {
            principal,
            deadline: grpc_timeout(md).map(|t| Instant::now() + t - reply_margin(t)),
        })
    }
}

/// Part of the caller's budget kept for our answer's trip back: the caller's own timer fires at
/// its deadline, and it should receive our DEADLINE_EXCEEDED (which lists the attempts) before that,
/// not a bare local timeout.
fn reply_margin(timeout: Duration) -> Duration {
    (timeout / 10).min(Duration::from_millis(50))
}

/// The caller's deadline from the `grpc-timeout` header (`100m`, `5S`, ...), per the gRPC HTTP/2 spec.
fn grpc_timeout(md: &MetadataMap) -> Option<Duration> {
    let v = md.get("grpc-timeout")?.to_str().ok()?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The route as response metadata (for proxies, logs and callers that do not read the body).
fn route_metadata(md: &mut MetadataMap, route: &RouteInfo) {
    let mut put = |key: &'static str, value: String| {
        if let Ok(v) = value.parse() {
            md.insert(key, v);
        }
    };
    put("x-switchboard-model-group", route.group.to_string());
    put("x-switchboard-deployment", route.deployment.to_string());
    put("x-switchboard-attempts", route.attempts.len().to_string());
    put("x-switchboard-cache-hit", route.cache_hit.to_string());
    if !route.fallbacks.is_empty() {
        let list: Vec<&str> = route.fallbacks.iter().map(|g| g.as_str()).collect();
        put("x-switchboard-fallbacks", list.join(","));
    }
}

/// What is left of the caller's rate limits, as OpenAI names it.
fn quota_metadata(md: &mut MetadataMap, grant: &Grant) {
    if let Some(n) = grant.rpm_remaining {
        md.insert("x-ratelimit-remaining-requests", n.into());
    }
    if let Some(n) = grant.tpm_remaining {
        md.insert("x-ratelimit-remaining-tokens", n.into());
    }
}

pub struct ChatApi(pub Arc<Gateway>);

type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::ChatChunk, Status>> + Send>>;

const CHAT_SERVICE: &str = "switchboard.v1.ChatService";
const EMBEDDINGS_SERVICE: &str = "switchboard.v1.EmbeddingsService";

/// Runs a call's work inside its server span and books the outcome (span, metrics, metadata).
async fn served<T>(
    scope: Scope,
    router: &Router,
    group: String,
    work: impl std::future::Future<Output = Result<(Response<T>, RouteInfo), ApiError>>,
) -> Result<Response<T>, Status> {
    match scope.run(work).await {
        Ok((mut resp, route)) => {
            scope.ok(&route, &router.table());
            route_metadata(resp.metadata_mut(), &route);
            if let Ok(v) = scope.request_id.parse() {
                resp.metadata_mut().insert("x-request-id", v);
            }
            Ok(resp)
        }
        Err(e) => {
            scope.failed(&group, &e);
            Err(e.to_status())
        }
    }
}

#[tonic::async_trait]
impl pb::chat_service_server::ChatService for ChatApi {
    async fn complete(
        &self,
        request: Request<pb::ChatRequest>,
    ) -> Result<Response<pb::ChatResponse>, Status> {
        let scope = Scope::grpc(CHAT_SERVICE, "Complete", request.metadata().as_ref());
        let group = request.get_ref().model.clone();
        let request_id = scope.request_id.clone();
        served(scope, &self.0.router, group, async {
            let ctx = self.0.context(request.metadata())?;
            let mut req = convert::chat_request(request.into_inner())?;
            let call = ctx.call(&request_id);
            let out = self.0.chat(call, &mut req).await?;
            let mut resp = Response::new(convert::chat_response(out.value, &out.route, out.cost));
            quota_metadata(resp.metadata_mut(), &out.grant);
            Ok((resp, out.route))
        })
        .await
    }

    type StreamCompleteStream = ChunkStream;

    async fn stream_complete(
        &self,
        request: Request<pb::ChatRequest>,
    ) -> Result<Response<Self::StreamCompleteStream>, Status> {
        let scope = Scope::grpc(CHAT_SERVICE, "StreamComplete", request.metadata().as_ref());
        let group = request.get_ref().model.clone();
        let ttft = scope.clock();
        let request_id = scope.request_id.clone();
        served(scope, &self.0.router, group, async {
            let ctx = self.0.context(request.metadata())?;
            let mut req = convert::chat_request(request.into_inner())?;
            let (stream, grant) = self.0.chat_stream(ctx.call(&request_id), &mut req).await?;
            let route = stream.route().clone();
            observe::first_chunk("grpc", &route, ttft.elapsed());
            let mut resp = Response::new(chunks_with_route(stream));
            quota_metadata(resp.metadata_mut(), &grant);
            Ok((resp, route))
        })
        .await
    }
}

/// Forwards chunks as they come (no look-ahead, so no added latency). The route rides on the chunk
/// that carries usage; if the upstream sent none, a final chunk carries it. A live stream's ticket
/// settles when it ends, fails or is dropped by a caller who went away, at the cost of what was
/// consumed.
fn chunks_with_route(stream: ChatStream) -> ChunkStream {
    struct St {
        inner: ChatStream,
        route_sent: bool,
        id: String,
        model: String,
        created: i64,
        ended: bool,
    }
    let st = St {
        inner: stream,
        route_sent: false,
        id: String::new(),
        model: String::new(),
        created: 0,
        ended: false,
    };
    futures_util::stream::unfold(st, |mut st| async move {
        if st.ended {
            return None;
        }
        match st.inner.next().await {
            Some(Ok(chunk)) => {
                if st.id.is_empty() {
                    st.id.clone_from(&chunk.id);
                    st.model.clone_from(&chunk.model);
                    st.created = chunk.created;
                }
                let usage = chunk.usage;
                let mut out = convert::chat_chunk(chunk);
                if let Some(u) = usage.filter(|_| !st.route_sent) {
                    out.route = Some(convert::route(st.inner.route(), st.inner.cost(&u)));
                    st.route_sent = true;
                }
                Some((Ok(out), st))
            }
            Some(Err(e)) => {
                st.ended = true;
                let e = ApiError::from(e);
                st.inner.settle(e.reason());
                Some((Err(e.to_status()), st))
            }
            None => {
                st.ended = true;
                st.inner.settle("ok");
                if st.route_sent {
                    return None;
                }
                let usage = st.inner.usage();
                let cost = st.inner.cost(&usage);
                let last = pb::ChatChunk {
                    id: std::mem::take(&mut st.id),
                    model: std::mem::take(&mut st.model),
                    created: st.created,
                    choices: Vec::new(),
                    usage: None,
                    route: Some(convert::route(st.inner.route(), cost)),
                };
                Some((Ok(last), st))
            }
        }
    })
    .boxed()
}

pub struct EmbeddingsApi(pub Arc<Gateway>);

#[tonic::async_trait]
impl pb::embeddings_service_server::EmbeddingsService for EmbeddingsApi {
    async fn embed(&self, request: Request<pb::EmbedRequest>) -> Result<Response<pb::EmbedResponse>, Status> {
        let scope = Scope::grpc(EMBEDDINGS_SERVICE, "Embed", request.metadata().as_ref());
        let group = request.get_ref().model.clone();
        let request_id = scope.request_id.clone();
        served(scope, &self.0.router, group, async {
            let ctx = self.0.context(request.metadata())?;
            let mut req = convert::embed_request(request.into_inner())?;
            let out = self.0.embed(ctx.call(&request_id), &mut req).await?;
            let mut resp = Response::new(convert::embed_response(out.value, &out.route, out.cost));
            quota_metadata(resp.metadata_mut(), &out.grant);
            Ok((resp, out.route))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_grpc_timeout_units() {
        let md = |v: &str| {
            let mut m = MetadataMap::new();
            m.insert("grpc-timeout", v.parse().unwrap());
            grpc_timeout(&m)
        };
        assert_eq!(md("100m"), Some(Duration::from_millis(100)));
        assert_eq!(md("5S"), Some(Duration::from_secs(5)));
        assert_eq!(md("2M"), Some(Duration::from_secs(120)));
        assert_eq!(md("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(md("7u"), Some(Duration::from_micros(7)));
        assert_eq!(md("9n"), Some(Duration::from_nanos(9)));
        assert_eq!(md("5x"), None);
        assert_eq!(md("123456789S"), None, "at most 8 digits");
    }
}
