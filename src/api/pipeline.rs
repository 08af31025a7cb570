//! One pipeline for every data-plane call, whatever the surface: the model's aliases and
//! allow-list, the response cache (a hit costs nothing and skips budgets), admission against
//! budgets and limits, routing, settlement, and filling the cache with the answer.

use std::sync::Arc;

use tokio::time::Instant;
use tracing::{Instrument as _, field::Empty};

use super::{
    admission::{Admission, MeteredStream},
    error::ApiError,
    grpc::{Ask, Gateway},
};
use crate::{
    auth::Principal,
    cache::{Answer, Entry, Kind, Lookup, Origin, Partition, key},
    domain::{
        CacheControl, ChatChunk, ChatRequest, ChatResponse, Cost, DeploymentId, EmbedRequest, EmbedResponse,
        ModelGroup, Usage,
    },
    limits::Grant,
    router::{RouteError, RouteInfo},
};

/// Who is calling, and by when they need the answer.
#[derive(Clone, Copy)]
pub(super) struct Call<'a> {
    pub principal: &'a Principal,
    pub request_id: &'a str,
    pub deadline: Option<Instant>,
}

enum Cached<T> {
    Hit(Served<T>),
    Miss(Option<crate::cache::Fill>),
}

/// A served unary call.
pub(super) struct Served<T> {
    pub value: T,
    pub route: RouteInfo,
    pub cost: Cost,
    /// What is left of the caller's rate limits (nothing for a cache hit, which uses none).
    pub grant: Grant,
}

fn origin(route: &RouteInfo) -> Origin {
    Origin {
        group: route.group.to_string(),
        deployment: route.deployment.to_string(),
        provider: route.provider.to_string(),
        upstream_model: route.upstream_model.clone(),
    }
}

/// The route reported for a cached answer: where it came from, no attempt, no cost.
fn cached_route(origin: &Origin) -> RouteInfo {
    RouteInfo {
        group: ModelGroup::new(origin.group.as_str()),
        deployment: DeploymentId::new(origin.deployment.as_str()),
        provider: crate::config::providers::PROVIDERS
            .iter()
            .find(|p| p.name == origin.provider)
            .map_or("cache", |p| p.name),
        upstream_model: origin.upstream_model.clone(),
        attempts: Vec::new(),
        fallbacks: Vec::new(),
        price: None,
        cache_hit: true,
    }
}

impl Gateway {
    /// Looks the request up when the cache applies to it, in its own span.
    async fn look_up(
        &self,
        kind: Kind,
        principal: &Principal,
        group: &ModelGroup,
        ctl: &CacheControl,
        key_of: impl FnOnce(Partition<'_>) -> key::CacheKey,
    ) -> Option<Lookup> {
        let cache = self.cache.as_ref()?;
        if !cache.applies(kind, ctl) {
            return None;
        }
        let (key_scope, team_scope) = match principal {
            Principal::Key(who) if cache.settings().isolation != crate::config::Isolation::Shared => (
                Some(format!("key:{}", who.key.id)),
                who.key.team_id.as_ref().map(|t| format!("team:{t}")),
            ),
            _ => (None, None),
        };
        let key = key_of(cache.partition(ctl, key_scope.as_deref(), team_scope.as_deref()));
        let span = tracing::info_span!(
            "cache",
            otel.name = "cache lookup",
            switchboard.cache.kind = kind.as_str(),
            switchboard.cache.hit = Empty,
        );
        let found = cache
            .lookup(kind, group.as_str(), key, ctl)
            .instrument(span.clone())
            .await;
        span.record("switchboard.cache.hit", matches!(found, Lookup::Hit { .. }));
        Some(found)
    }

    /// `general_settings.max_messages` (the byte size was bounded when the request was read).
    fn check_size(&self, req: &ChatRequest) -> Result<(), ApiError> {
        let max = self.limits.max_messages;
        if req.messages.len() > max {
            return Err(super::validate::invalid(
                "messages",
                format!(
                    "has {} messages; this gateway accepts at most {max} (general_settings.max_messages)",
                    req.messages.len()
                ),
            ));
        }
        Ok(())
    }

    /// Books a cache hit: a spend record at zero cost (status `cache_hit`), no budget or limit.
    fn book_hit(
        &self,
        call: Call<'_>,
        model: &ModelGroup,
        end_user: Option<&str>,
        entry: &Entry,
        usage: &Usage,
    ) -> RouteInfo {
        let route = cached_route(&entry.origin);
        let ticket = self.quotas.unmetered(&Admission {
            principal: call.principal,
            request_id: call.request_id,
            model: model.as_str(),
            group: None,
            end_user,
            prompt_tokens: &|| 0,
            max_tokens: None,
            stream: false,
        });
        ticket.settle(Some(&route.deployment), usage, Cost::ZERO, "cache_hit");
        route
    }

    /// What a lookup means for a unary call: the served hit (booked at zero cost), or the fill
    /// that stores the answer about to be fetched (none when the cache does not apply).
    fn resolve<T: Clone>(
        &self,
        call: Call<'_>,
        model: &ModelGroup,
        end_user: Option<&str>,
        found: Option<Lookup>,
        answer: fn(&Answer) -> Option<(&T, &Usage)>,
    ) -> Cached<T> {
        match found {
            Some(Lookup::Hit { entry, .. }) => match answer(&entry.answer) {
                Some((value, usage)) => {
                    let route = self.book_hit(call, model, end_user, &entry, usage);
                    Cached::Hit(Served {
                        value: value.clone(),
                        route,
                        cost: Cost::ZERO,
                        grant: Grant::default(),
                    })
                }
                // An entry of another kind cannot sit under this key (the kind is hashed in).
                None => Cached::Miss(None),
            },
            Some(Lookup::Miss(fill)) => Cached::Miss(Some(fill)),
            None => Cached::Miss(None),
        }
    }

    /// A unary chat completion.
    pub(super) async fn chat(
        &self,
        call: Call<'_>,
        req: &mut ChatRequest,
    ) -> Result<Served<ChatResponse>, ApiError> {
        self.check_size(req)?;
        self.authorize(call.principal, &mut req.model)?;
        let found = self
            .look_up(Kind::Chat, call.principal, &req.model, &req.cache, |p| {
                key::chat(req, false, p)
            })
            .await;
        let fill = match self.resolve(call, &req.model, req.user.as_deref(), found, |a| match a {
            Answer::Chat(r) => Some((r, &r.usage)),
            _ => None,
        }) {
            Cached::Hit(served) => return Ok(served),
            Cached::Miss(fill) => fill,
        };
        let messages = &req.messages;
        let estimate = move || crate::router::estimate_prompt_tokens(messages);
        let ask = Ask {
            request_id: call.request_id,
            end_user: req.user.as_deref(),
            prompt_tokens: &estimate,
            max_tokens: req.params.max_tokens,
            stream: false,
        };
        let ticket = self.admit(call.principal, &req.model, ask).await?;
        let grant = ticket.grant();
        let result = self.router.chat(req, call.deadline).await;
        let (routed, cost) = ticket.settle_routed(result, |v| &v.usage).await?;
        if let Some(fill) = fill {
            fill.store(
                Answer::Chat(routed.value.clone()),
                origin(&routed.route),
                Kind::Chat,
            );
        }
        Ok(Served {
            value: routed.value,
            route: routed.route,
            cost,
            grant,
        })
    }

    /// Embeddings.
    pub(super) async fn embed(
        &self,
        call: Call<'_>,
        req: &mut EmbedRequest,
    ) -> Result<Served<EmbedResponse>, ApiError> {
        self.authorize(call.principal, &mut req.model)?;
        let found = self
            .look_up(Kind::Embed, call.principal, &req.model, &req.cache, |p| {
                key::embed(req, p)
            })
            .await;
        let fill = match self.resolve(call, &req.model, req.user.as_deref(), found, |a| match a {
            Answer::Embed(r) => Some((r, &r.usage)),
            _ => None,
        }) {
            Cached::Hit(served) => return Ok(served),
            Cached::Miss(fill) => fill,
        };
        let input = &req.input;
        let estimate = move || EmbedRequest::estimate_input_tokens(input);
        let ask = Ask {
            request_id: call.request_id,
            end_user: req.user.as_deref(),
            prompt_tokens: &estimate,
            max_tokens: Some(0),
            stream: false,
        };
        let ticket = self.admit(call.principal, &req.model, ask).await?;
        let grant = ticket.grant();
        let result = self.router.embed(req, call.deadline).await;
        let (routed, cost) = ticket.settle_routed(result, |v| &v.usage).await?;
        if let Some(fill) = fill {
            fill.store(
                Answer::Embed(routed.value.clone()),
                origin(&routed.route),
                Kind::Embed,
            );
        }
        Ok(Served {
            value: routed.value,
            route: routed.route,
            cost,
            grant,
        })
    }

    /// A streamed chat completion: live from upstream (recorded for the cache when it applies),
    /// or replayed from the cache chunk for chunk.
    pub(super) async fn chat_stream(
        &self,
        call: Call<'_>,
        req: &mut ChatRequest,
    ) -> Result<(ChatStream, Grant), ApiError> {
        self.check_size(req)?;
        self.authorize(call.principal, &mut req.model)?;
        let fill = match self
            .look_up(Kind::ChatStream, call.principal, &req.model, &req.cache, |p| {
                key::chat(req, true, p)
            })
            .await
        {
            Some(Lookup::Hit { entry, .. }) if matches!(entry.answer, Answer::Stream(_)) => {
                let usage = match &entry.answer {
                    Answer::Stream(chunks) => chunks.iter().rev().find_map(|c| c.usage).unwrap_or_default(),
                    _ => Usage::default(),
                };
                let route = self.book_hit(call, &req.model, req.user.as_deref(), &entry, &usage);
                let stream = ChatStream {
                    source: Source::Replay {
                        entry,
                        next: 0,
                        usage,
                    },
                    route,
                    recorder: None,
                };
                return Ok((stream, Grant::default()));
            }
            Some(Lookup::Miss(fill)) => Some(fill),
            _ => None,
        };
        let messages = &req.messages;
        let estimate = move || crate::router::estimate_prompt_tokens(messages);
        let ask = Ask {
            request_id: call.request_id,
            end_user: req.user.as_deref(),
            prompt_tokens: &estimate,
            max_tokens: req.params.max_tokens,
            stream: true,
        };
        let ticket = self.admit(call.principal, &req.model, ask).await?;
        let grant = ticket.grant();
        let routed = match self.router.chat_stream(req, call.deadline).await {
            Ok(s) => s,
            Err(e) => return Err(ticket.failed(e)),
        };
        let route = routed.route().clone();
        let limit = self.cache.as_ref().map_or(0, |c| c.settings().max_entry_bytes);
        let stream = ChatStream {
            source: Source::Live(MeteredStream {
                inner: routed,
                ticket: Some(ticket),
            }),
            route,
            recorder: fill.map(|fill| Recorder {
                fill,
                chunks: Vec::new(),
                bytes: 0,
                limit,
            }),
        };
        Ok((stream, grant))
    }
}

// Built once per stream and moved once into the response body: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Source {
    Live(MeteredStream),
    Replay {
        entry: Arc<Entry>,
        next: usize,
        usage: Usage,
    },
}

/// Collects a live stream's chunks; a stream that completes is stored for replay.
struct Recorder {
    fill: crate::cache::Fill,
    chunks: Vec<ChatChunk>,
    /// Approximate size so far; past `limit` recording stops (too large to cache).
    bytes: usize,
    limit: usize,
}

/// A chat stream as the surfaces consume it, whether live or replayed from the cache.
pub(super) struct ChatStream {
    source: Source,
    route: RouteInfo,
    recorder: Option<Recorder>,
}

impl ChatStream {
    pub async fn next(&mut self) -> Option<Result<ChatChunk, RouteError>> {
        use futures_util::StreamExt as _;
        match &mut self.source {
            Source::Live(m) => {
                let item = m.inner.next().await;
                match &item {
                    Some(Ok(chunk)) => {
                        if let Some(r) = &mut self.recorder {
                            r.bytes += crate::cache::chunk_bytes(chunk);
                            if r.bytes > r.limit {
                                self.recorder = None;
                            } else {
                                r.chunks.push(chunk.clone());
                            }
                        }
                    }
                    None => {
                        if let Some(r) = self.recorder.take() {
                            r.fill
                                .store(Answer::Stream(r.chunks), origin(&self.route), Kind::ChatStream);
                        }
                    }
                    // A failed stream is not cached; dropping the fill lets waiters go upstream.
                    Some(Err(_)) => self.recorder = None,
                }
                item
            }
            Source::Replay { entry, next, .. } => {
                let Answer::Stream(chunks) = &entry.answer else {
                    return None;
                };
                let chunk = chunks.get(*next)?.clone();
                *next += 1;
                Some(Ok(chunk))
            }
        }
    }

    pub fn route(&self) -> &RouteInfo {
        &self.route
    }

    /// What the stream consumed so far (a replay: what the original stream reported).
    pub fn usage(&self) -> Usage {
        match &self.source {
            Source::Live(m) => m.inner.usage(),
            Source::Replay { usage, .. } => *usage,
        }
    }

    /// Cost of what was consumed: zero for a replay.
    pub fn cost(&self, usage: &Usage) -> Cost {
        self.route.cost(usage)
    }

    /// Settles a live stream's ticket (a replay was booked when it started).
    pub fn settle(&mut self, status: &str) {
        if let Source::Live(m) = &mut self.source {
            m.settle(status);
        }
    }
}
