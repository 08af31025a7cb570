//! Who is calling: the master key (`general_settings.master_key`), a virtual key from the
//! [`Directory`], or nobody when no master key is configured (an open local gateway).
//! Authenticating reads only the in-memory directory: one SHA-256 and one map lookup.

mod directory;
mod etcd;
pub mod manage;
pub mod records;

use std::{collections::HashMap, sync::Arc};

use subtle::ConstantTimeEq;

pub use directory::{Backend, Change, Directory, Kind, MemoryBackend, Record, Snapshot, StoreError};
pub use etcd::EtcdBackend;
pub use records::{KeyRecord, Limits, TeamRecord, UserRecord, Window};

use crate::domain::{ModelGroup, Secret};

/// The authenticated caller of one request.
#[derive(Debug, Clone)]
pub enum Principal {
    /// No master key is configured: the gateway is open (local development).
    Anonymous,
    /// The master key: every model, every admin call.
    Master,
    /// A virtual key, with its team and user as they were when the request arrived.
    Key(Arc<Identity>),
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        matches!(self, Principal::Anonymous | Principal::Master)
    }
}

/// A virtual key and what it belongs to.
#[derive(Debug)]
pub struct Identity {
    pub key: Arc<KeyRecord>,
    pub team: Option<Arc<TeamRecord>>,
    pub user: Option<Arc<UserRecord>>,
}

impl Identity {
    /// The group a requested model name means for this key (its `aliases` first).
    pub fn resolve<'a>(&'a self, model: &'a str) -> &'a str {
        self.key.aliases.get(model).map_or(model, String::as_str)
    }

    /// Whether the key, its team and its user all allow `group`. An empty list allows everything;
    /// entries may name access groups (`model_info.access_groups`), `*` or `all-proxy-models`.
    pub fn allows(&self, group: &str, access_groups: &HashMap<String, Vec<ModelGroup>>) -> bool {
        let listed = |models: &[String]| {
            models.is_empty()
                || models.iter().any(|m| {
                    m == group
                        || m == "*"
                        || m == "all-proxy-models"
                        || access_groups
                            .get(m)
                            .is_some_and(|gs| gs.iter().any(|g| g.as_str() == group))
                })
        };
        listed(&self.key.models)
            && self.team.as_ref().is_none_or(|t| listed(&t.models))
            && self.user.as_ref().is_none_or(|u| listed(&u.models))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing credentials: send `authorization: Bearer <key>`")]
    Missing,
    #[error("malformed authorization header: expected `Bearer <key>`")]
    Malformed,
    #[error("invalid API key")]
    Invalid,
    #[error("API key {key_id} expired")]
    Expired { key_id: String },
    #[error("API key {key_id} is blocked")]
    Blocked { key_id: String },
    #[error("team {team_id} of API key {key_id} is blocked")]
    TeamBlocked { key_id: String, team_id: String },
    #[error(
        "the master key is not accepted on this replica (it serves the data plane only): use a virtual key"
    )]
    MasterRefused,
}

impl AuthError {
    /// Stable reason for `google.rpc.ErrorInfo`.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "MISSING_API_KEY",
            AuthError::Malformed => "MALFORMED_API_KEY",
            AuthError::Invalid => "INVALID_API_KEY",
            AuthError::Expired { .. } => "API_KEY_EXPIRED",
            AuthError::Blocked { .. } | AuthError::TeamBlocked { .. } => "API_KEY_BLOCKED",
            AuthError::MasterRefused => "MASTER_KEY_NOT_ACCEPTED",
        }
    }
}

pub struct Authenticator {
    /// Replaced when a new config changes it.
    master_key: arc_swap::ArcSwapOption<Secret>,
    directory: Arc<Directory>,
    /// A data-plane-only replica: the master key (and with it every admin call) is refused.
    refuse_master: bool,
}

impl Authenticator {
    pub fn new(master_key: Option<Secret>, directory: Arc<Directory>) -> Self {
        Self {
            master_key: arc_swap::ArcSwapOption::new(master_key.map(Arc::new)),
            directory,
            refuse_master: false,
        }
    }

    /// Refuses the master key on this replica (`--data-plane-only`).
    pub fn data_plane_only(mut self) -> Self {
        self.refuse_master = true;
        self
    }

    pub fn set_master_key(&self, key: Option<Secret>) {
        self.master_key.store(key.map(Arc::new));
    }

    /// Checks the value of an `authorization` header (gRPC metadata or HTTP).
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Principal, AuthError> {
        let master = self.master_key.load();
        let Some(master) = master.as_deref() else {
            return Ok(Principal::Anonymous);
        };
        let token = bearer_token(authorization.ok_or(AuthError::Missing)?)?;
        // Constant time in the key's content; only the length can be learnt, as with any bearer scheme.
        if bool::from(token.ct_eq(master.expose().as_bytes())) {
            return if self.refuse_master {
                Err(AuthError::MasterRefused)
            } else {
                Ok(Principal::Master)
            };
        }
        // Virtual keys are looked up by their hash: the plaintext is never stored or compared.
        let snap = self.directory.snapshot();
        let key = snap
            .key_by_hash(&manage::hash_key(token))
            .ok_or(AuthError::Invalid)?;
        if key.blocked {
            return Err(AuthError::Blocked {
                key_id: key.id.clone(),
            });
        }
        if key.expires_ms.is_some_and(|e| e <= manage::now_ms()) {
            return Err(AuthError::Expired {
                key_id: key.id.clone(),
            });
        }
        let team = key.team_id.as_ref().and_then(|t| snap.teams.get(t)).cloned();
        if let Some(t) = team.as_ref().filter(|t| t.blocked) {
            return Err(AuthError::TeamBlocked {
                key_id: key.id.clone(),
                team_id: t.id.clone(),
            });
        }
        let user = key.user_id.as_ref().and_then(|u| snap.users.get(u)).cloned();
        Ok(Principal::Key(Arc::new(Identity {
            key: key.clone(),
            team,
            user,
        })))
    }
}

fn bearer_token(header: &[u8]) -> Result<&[u8], AuthError> {
    let (scheme, rest) = match header.iter().position(|b| *b == b' ') {
        Some(i) => (&header[..i], &header[i + 1..]),
        None => return Err(AuthError::Malformed),
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(AuthError::Malformed);
    }
    let token = rest.trim_ascii();
    if token.is_empty() {
        return Err(AuthError::Malformed);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(master: Option<&str>) -> Authenticator {
        Authenticator::new(master.map(Secret::new), Arc::new(Directory::default()))
    }

    #[test]
    fn master_key_is_required_when_configured() {
        let a = auth(Some("sk-master"));
        assert!(matches!(
            a.authenticate(Some(b"Bearer sk-master")),
            Ok(Principal::Master)
        ));
        assert!(matches!(
            a.authenticate(Some(b"bearer  sk-master ")),
            Ok(Principal::Master)
        ));
        assert_eq!(a.authenticate(None).unwrap_err(), AuthError::Missing);
        assert_eq!(
            a.authenticate(Some(b"sk-master")).unwrap_err(),
            AuthError::Malformed
        );
        assert_eq!(
            a.authenticate(Some(b"Basic sk-master")).unwrap_err(),
            AuthError::Malformed
        );
        assert_eq!(
            a.authenticate(Some(b"Bearer sk-maste")).unwrap_err(),
            AuthError::Invalid
        );
        assert_eq!(
            a.authenticate(Some(b"Bearer sk-masterx")).unwrap_err(),
            AuthError::Invalid
        );
    }

    #[test]
    fn open_when_no_master_key() {
        assert!(matches!(auth(None).authenticate(None), Ok(Principal::Anonymous)));
    }

    #[test]
    fn virtual_keys_are_found_by_hash_and_refused_when_blocked_or_expired() {
        let a = auth(Some("sk-master"));
        let key = |id: &str, plain: &str| KeyRecord {
            id: id.into(),
            hash: manage::hash_key(plain.as_bytes()),
            team_id: Some("t".into()),
            ..KeyRecord::default()
        };
        a.directory.edit(|s| {
            s.put(Record::Key(key("k1", "sk-one")));
            s.put(Record::Key(KeyRecord {
                blocked: true,
                ..key("k2", "sk-two")
            }));
            s.put(Record::Key(KeyRecord {
                expires_ms: Some(1),
                ..key("k3", "sk-three")
            }));
            s.put(Record::Team(TeamRecord {
                id: "t".into(),
                models: vec!["cheap".into()],
                ..TeamRecord::default()
            }));
        });
        let Ok(Principal::Key(id)) = a.authenticate(Some(b"Bearer sk-one")) else {
            panic!("sk-one is a valid key");
        };
        assert_eq!(id.key.id, "k1");
        assert!(id.allows("cheap", &HashMap::new()));
        assert!(!id.allows("smart", &HashMap::new()), "the team allows only cheap");
        assert_eq!(
            a.authenticate(Some(b"Bearer sk-two")).unwrap_err(),
            AuthError::Blocked { key_id: "k2".into() }
        );
        assert_eq!(
            a.authenticate(Some(b"Bearer sk-three")).unwrap_err(),
            AuthError::Expired { key_id: "k3".into() }
        );
        assert_eq!(
            a.authenticate(Some(b"Bearer sk-four")).unwrap_err(),
            AuthError::Invalid
        );
    }
}
