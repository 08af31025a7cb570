//! Creating and changing keys, teams and users: validation, key generation and hashing. The
//! admin API (gRPC, the CLI and LiteLLM's HTTP endpoints) calls these; the store makes them durable.

use std::{collections::BTreeMap, sync::Arc};

use ring::rand::SecureRandom as _;

use super::{
    Backend, Change, Directory, Kind, Record, StoreError,
    records::{KeyRecord, Limits, TeamRecord, UserRecord, Window},
};
use crate::domain::{Cost, Secret};

/// Every field a key, team or user can carry; which apply depends on the record.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    /// Teams: an explicit id (else generated). Users: required.
    pub id: Option<String>,
    pub alias: Option<String>,
    pub models: Vec<String>,
    pub max_budget: Option<f64>,
    pub budget_duration: Option<String>,
    pub soft_budget: Option<f64>,
    pub rpm_limit: Option<u64>,
    pub tpm_limit: Option<u64>,
    pub max_parallel_requests: Option<u32>,
    /// Keys: unix milliseconds.
    pub expires_ms: Option<i64>,
    pub metadata: BTreeMap<String, String>,
    pub team_id: Option<String>,
    pub user_id: Option<String>,
    pub aliases: BTreeMap<String, String>,
    /// Teams: member user ids.
    pub members: Vec<String>,
}

/// Which fields of a [`Spec`] an update takes: the listed ones (cleared when unset in the spec), or,
/// with an empty list, every field the spec sets.
#[derive(Debug, Clone, Default)]
pub struct Update {
    pub spec: Spec,
    pub fields: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ManageError {
    #[error("invalid {field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{0}")]
    InUse(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(field: &str, message: impl Into<String>) -> ManageError {
    ManageError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

pub use crate::domain::now_ms;

/// Hex SHA-256: how keys are stored and looked up.
pub fn hash_key(plaintext: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, plaintext);
    let mut out = String::with_capacity(64);
    for b in digest.as_ref() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// `n` characters from the OS CSPRNG.
fn random_text(n: usize) -> String {
    let rng = ring::rand::SystemRandom::new();
    let mut bytes = vec![0u8; n];
    rng.fill(&mut bytes).expect("the OS random generator works");
    // 62 * 4 = 248: rejecting bytes >= 248 keeps every character equally likely.
    let mut out = String::with_capacity(n);
    let mut pool = bytes;
    while out.len() < n {
        for b in &pool {
            if *b < 248 && out.len() < n {
                out.push(ALPHABET[usize::from(*b) % 62] as char);
            }
        }
        pool = vec![0u8; n];
        rng.fill(&mut pool).expect("the OS random generator works");
    }
    out
}

fn limits_from(
    spec: &Spec,
    fields: &dyn Fn(&str) -> bool,
    mut limits: Limits,
) -> Result<Limits, ManageError> {
    let money = |v: Option<f64>, field: &str| -> Result<Option<Cost>, ManageError> {
        match v {
            Some(usd) if !(usd.is_finite() && usd >= 0.0) => {
                Err(invalid(field, "must be a non-negative number of USD"))
            }
            v => Ok(v.map(Cost::from_usd)),
        }
    };
    if fields("max_budget") {
        limits.max_budget = money(spec.max_budget, "max_budget")?;
    }
    if fields("soft_budget") {
        limits.soft_budget = money(spec.soft_budget, "soft_budget")?;
    }
    if fields("budget_duration") {
        limits.budget_duration = spec
            .budget_duration
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(|s| Window::parse(s).map_err(|m| invalid("budget_duration", m)))
            .transpose()?;
    }
    if fields("rpm_limit") {
        limits.rpm_limit = spec.rpm_limit;
    }
    if fields("tpm_limit") {
        limits.tpm_limit = spec.tpm_limit;
    }
    if fields("max_parallel_requests") {
        if spec.max_parallel_requests == Some(0) {
            return Err(invalid("max_parallel_requests", "must be at least 1"));
        }
        limits.max_parallel_requests = spec.max_parallel_requests;
    }
    Ok(limits)
}

const LIMIT_FIELDS: &[&str] = &[
    "max_budget",
    "budget_duration",
    "soft_budget",
    "rpm_limit",
    "tpm_limit",
    "max_parallel_requests",
];

/// Answers "does this update take field X?".
type Selector<'a> = Box<dyn Fn(&str) -> bool + 'a>;

/// Which fields an update takes, after checking that every listed one exists on this record.
fn selector<'a>(update: &'a Update, known: &'a [&'a str]) -> Result<Selector<'a>, ManageError> {
    if let Some(bad) = update
        .fields
        .iter()
        .find(|f| !known.contains(&f.as_str()) && !LIMIT_FIELDS.contains(&f.as_str()))
    {
        return Err(invalid("update_mask", format!("unknown field {bad:?}")));
    }
    if update.fields.is_empty() {
        let s = &update.spec;
        Ok(Box::new(move |f: &str| match f {
            "alias" => s.alias.is_some(),
            "models" => !s.models.is_empty(),
            "max_budget" => s.max_budget.is_some(),
            "budget_duration" => s.budget_duration.is_some(),
            "soft_budget" => s.soft_budget.is_some(),
            "rpm_limit" => s.rpm_limit.is_some(),
            "tpm_limit" => s.tpm_limit.is_some(),
            "max_parallel_requests" => s.max_parallel_requests.is_some(),
            "expires" => s.expires_ms.is_some(),
            "metadata" => !s.metadata.is_empty(),
            "team_id" => s.team_id.is_some(),
            "user_id" => s.user_id.is_some(),
            "aliases" => !s.aliases.is_empty(),
            "members" => !s.members.is_empty(),
            _ => false,
        }))
    } else {
        Ok(Box::new(move |f: &str| update.fields.iter().any(|x| x == f)))
    }
}

const KEY_FIELDS: &[&str] = &[
    "alias", "models", "expires", "metadata", "team_id", "user_id", "aliases",
];
const TEAM_FIELDS: &[&str] = &["alias", "models", "metadata", "members"];
const USER_FIELDS: &[&str] = &["models", "metadata"];

/// Admin operations over a store.
pub struct Manager {
    pub directory: Arc<Directory>,
    pub backend: Arc<dyn Backend>,
}

/// A key as created or regenerated: the plaintext is returned exactly once (Debug redacts it).
#[derive(Debug)]
pub struct IssuedKey {
    pub plaintext: Secret,
    pub record: KeyRecord,
}

impl Manager {
    fn check_refs(&self, key: &KeyRecord) -> Result<(), ManageError> {
        let snap = self.directory.snapshot();
        if let Some(t) = &key.team_id {
            let team = snap
                .teams
                .get(t)
                .ok_or_else(|| invalid("team_id", format!("team {t:?} does not exist")))?;
            if let Some(u) = &key.user_id
                && !team.members.is_empty()
                && !team.members.contains(u)
            {
                return Err(invalid(
                    "user_id",
                    format!("user {u:?} is not a member of team {t:?}"),
                ));
            }
        }
        Ok(())
    }

    fn issue(record: &mut KeyRecord) -> Secret {
        let plaintext = format!("sk-{}", random_text(40));
        record.hash = hash_key(plaintext.as_bytes());
        record.preview = format!("sk-...{}", &plaintext[plaintext.len() - 4..]);
        Secret::new(plaintext)
    }

    pub async fn create_key(&self, spec: Spec) -> Result<IssuedKey, ManageError> {
        let now = now_ms();
        let update = Update {
            spec,
            fields: Vec::new(),
        };
        let mut record = KeyRecord {
            id: format!("key-{}", random_text(16)),
            created_ms: now,
            updated_ms: now,
            ..KeyRecord::default()
        };
        apply_key(&mut record, &update)?;
        self.check_refs(&record)?;
        let plaintext = Self::issue(&mut record);
        self.backend
            .apply(Change::Create(Record::Key(record.clone())))
            .await?;
        Ok(IssuedKey { plaintext, record })
    }

    pub fn key(&self, id: &str) -> Result<Arc<KeyRecord>, ManageError> {
        self.directory
            .snapshot()
            .keys
            .get(id)
            .cloned()
            .ok_or_else(|| StoreError::NotFound("key", id.to_string()).into())
    }

    pub async fn update_key(&self, id: &str, update: &Update) -> Result<KeyRecord, ManageError> {
        let mut record = KeyRecord::clone(&*self.key(id)?);
        apply_key(&mut record, update)?;
        self.check_refs(&record)?;
        record.updated_ms = now_ms();
        self.backend
            .apply(Change::Update(Record::Key(record.clone())))
            .await?;
        Ok(record)
    }

    pub async fn block_key(&self, id: &str, blocked: bool) -> Result<KeyRecord, ManageError> {
        let mut record = KeyRecord::clone(&*self.key(id)?);
        record.blocked = blocked;
        record.updated_ms = now_ms();
        self.backend
            .apply(Change::Update(Record::Key(record.clone())))
            .await?;
        Ok(record)
    }

    /// A new secret for the same key id (limits and spend carry over); the old one stops working.
    pub async fn regenerate_key(&self, id: &str) -> Result<IssuedKey, ManageError> {
        let mut record = KeyRecord::clone(&*self.key(id)?);
        let plaintext = Self::issue(&mut record);
        record.updated_ms = now_ms();
        self.backend
            .apply(Change::Update(Record::Key(record.clone())))
            .await?;
        Ok(IssuedKey { plaintext, record })
    }

    pub async fn delete(&self, kind: Kind, id: &str) -> Result<(), ManageError> {
        if kind == Kind::Team {
            let snap = self.directory.snapshot();
            let n = snap
                .keys
                .values()
                .filter(|k| k.team_id.as_deref() == Some(id))
                .count();
            if n > 0 {
                return Err(ManageError::InUse(format!(
                    "team {id:?} still has {n} key(s); delete or move them first"
                )));
            }
        }
        Ok(self.backend.apply(Change::Delete(kind, id.to_string())).await?)
    }

    pub async fn create_team(&self, spec: Spec) -> Result<TeamRecord, ManageError> {
        let now = now_ms();
        let id = match spec.id.clone() {
            Some(id) if id.trim().is_empty() => return Err(invalid("team_id", "must not be empty")),
            Some(id) => id,
            None => format!("team-{}", random_text(12)),
        };
        let mut record = TeamRecord {
            id,
            created_ms: now,
            updated_ms: now,
            ..TeamRecord::default()
        };
        apply_team(
            &mut record,
            &Update {
                spec,
                fields: Vec::new(),
            },
        )?;
        self.backend
            .apply(Change::Create(Record::Team(record.clone())))
            .await?;
        Ok(record)
    }

    pub fn team(&self, id: &str) -> Result<Arc<TeamRecord>, ManageError> {
        self.directory
            .snapshot()
            .teams
            .get(id)
            .cloned()
            .ok_or_else(|| StoreError::NotFound("team", id.to_string()).into())
    }

    pub async fn update_team(&self, id: &str, update: &Update) -> Result<TeamRecord, ManageError> {
        let mut record = TeamRecord::clone(&*self.team(id)?);
        apply_team(&mut record, update)?;
        record.updated_ms = now_ms();
        self.backend
            .apply(Change::Update(Record::Team(record.clone())))
            .await?;
        Ok(record)
    }

    pub async fn block_team(&self, id: &str, blocked: bool) -> Result<TeamRecord, ManageError> {
        let mut record = TeamRecord::clone(&*self.team(id)?);
        record.blocked = blocked;
        record.updated_ms = now_ms();
        self.backend
            .apply(Change::Update(Record::Team(record.clone())))
            .await?;
        Ok(record)
    }

    pub async fn create_user(&self, spec: Spec) -> Result<UserRecord, ManageError> {
        let now = now_ms();
        let id = spec
            .id
            .clone()
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| invalid("user_id", "is required"))?;
        let mut record = UserRecord {
            id,
            created_ms: now,
            updated_ms: now,
            ..UserRecord::default()
        };
        apply_user(
            &mut record,
            &Update {
                spec,
                fields: Vec::new(),
            },
        )?;
        self.backend
            .apply(Change::Create(Record::User(record.clone())))
            .await?;
        Ok(record)
    }

    pub fn user(&self, id: &str) -> Result<Arc<UserRecord>, ManageError> {
        self.directory
            .snapshot()
            .users
            .get(id)
            .cloned()
            .ok_or_else(|| StoreError::NotFound("user", id.to_string()).into())
    }

    pub async fn update_user(&self, id: &str, update: &Update) -> Result<UserRecord, ManageError> {
        let mut record = UserRecord::clone(&*self.user(id)?);
        apply_user(&mut record, update)?;
        record.updated_ms = now_ms();
        self.backend
            .apply(Change::Update(Record::User(record.clone())))
            .await?;
        Ok(record)
    }
}

fn apply_key(k: &mut KeyRecord, update: &Update) -> Result<(), ManageError> {
    let take = selector(update, KEY_FIELDS)?;
    let s = &update.spec;
    k.limits = limits_from(s, &*take, k.limits.clone())?;
    if take("alias") {
        k.key_alias.clone_from(&s.alias);
    }
    if take("models") {
        k.models.clone_from(&s.models);
    }
    if take("expires") {
        k.expires_ms = s.expires_ms;
    }
    if take("metadata") {
        k.metadata.clone_from(&s.metadata);
    }
    if take("team_id") {
        k.team_id = s.team_id.clone().filter(|t| !t.is_empty());
    }
    if take("user_id") {
        k.user_id = s.user_id.clone().filter(|u| !u.is_empty());
    }
    if take("aliases") {
        k.aliases.clone_from(&s.aliases);
    }
    Ok(())
}

fn apply_team(t: &mut TeamRecord, update: &Update) -> Result<(), ManageError> {
    let take = selector(update, TEAM_FIELDS)?;
    let s = &update.spec;
    t.limits = limits_from(s, &*take, t.limits.clone())?;
    if take("alias") {
        t.team_alias.clone_from(&s.alias);
    }
    if take("models") {
        t.models.clone_from(&s.models);
    }
    if take("metadata") {
        t.metadata.clone_from(&s.metadata);
    }
    if take("members") {
        t.members.clone_from(&s.members);
    }
    Ok(())
}

fn apply_user(u: &mut UserRecord, update: &Update) -> Result<(), ManageError> {
    let take = selector(update, USER_FIELDS)?;
    let s = &update.spec;
    u.limits = limits_from(s, &*take, u.limits.clone())?;
    if take("models") {
        u.models.clone_from(&s.models);
    }
    if take("metadata") {
        u.metadata.clone_from(&s.metadata);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::MemoryBackend;

    fn manager() -> Manager {
        let directory = Arc::new(Directory::default());
        Manager {
            backend: Arc::new(MemoryBackend::new(directory.clone())),
            directory,
        }
    }

    #[tokio::test]
    async fn keys_are_stored_as_hashes_and_regeneration_replaces_the_secret() {
        let m = manager();
        let k = m
            .create_key(Spec {
                max_budget: Some(1.5),
                budget_duration: Some("30d".into()),
                ..Spec::default()
            })
            .await
            .unwrap();
        let plain = k.plaintext.expose().to_string();
        assert!(plain.starts_with("sk-") && plain.len() == 43);
        assert_eq!(k.record.hash, hash_key(plain.as_bytes()));
        assert!(!format!("{:?}", m.key(&k.record.id).unwrap()).contains(&plain[3..]));
        assert_eq!(k.record.limits.max_budget, Some(Cost::from_usd(1.5)));
        let again = m.regenerate_key(&k.record.id).await.unwrap();
        let snap = m.directory.snapshot();
        assert!(snap.key_by_hash(&hash_key(plain.as_bytes())).is_none());
        assert!(
            snap.key_by_hash(&hash_key(again.plaintext.expose().as_bytes()))
                .is_some()
        );
    }

    #[tokio::test]
    async fn updates_take_listed_fields_and_reject_unknown_ones() {
        let m = manager();
        let k = m
            .create_key(Spec {
                rpm_limit: Some(10),
                tpm_limit: Some(1000),
                ..Spec::default()
            })
            .await
            .unwrap();
        let cleared = m
            .update_key(
                &k.record.id,
                &Update {
                    spec: Spec::default(),
                    fields: vec!["rpm_limit".into()],
                },
            )
            .await
            .unwrap();
        assert_eq!(
            (cleared.limits.rpm_limit, cleared.limits.tpm_limit),
            (None, Some(1000))
        );
        let err = m
            .update_key(
                &k.record.id,
                &Update {
                    spec: Spec::default(),
                    fields: vec!["colour".into()],
                },
            )
            .await
            .unwrap_err();
        assert_eq!(err, invalid("update_mask", "unknown field \"colour\""));
        let err = m
            .create_key(Spec {
                team_id: Some("nope".into()),
                ..Spec::default()
            })
            .await
            .unwrap_err();
        assert!(
            matches!(err, ManageError::Invalid { ref field, .. } if field == "team_id"),
            "{err}"
        );
        let err = m
            .create_key(Spec {
                budget_duration: Some("1y".into()),
                ..Spec::default()
            })
            .await
            .unwrap_err();
        assert!(matches!(err, ManageError::Invalid { ref field, .. } if field == "budget_duration"));
    }

    #[tokio::test]
    async fn a_team_with_keys_cannot_be_deleted() {
        let m = manager();
        let t = m
            .create_team(Spec {
                id: Some("research".into()),
                members: vec!["ana".into()],
                ..Spec::default()
            })
            .await
            .unwrap();
        let err = m
            .create_key(Spec {
                team_id: Some(t.id.clone()),
                user_id: Some("bob".into()),
                ..Spec::default()
            })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not a member"), "{err}");
        let k = m
            .create_key(Spec {
                team_id: Some(t.id.clone()),
                user_id: Some("ana".into()),
                ..Spec::default()
            })
            .await
            .unwrap();
        assert!(matches!(
            m.delete(Kind::Team, "research").await,
            Err(ManageError::InUse(_))
        ));
        m.delete(Kind::Key, &k.record.id).await.unwrap();
        m.delete(Kind::Team, "research").await.unwrap();
        assert!(matches!(
            m.delete(Kind::Team, "research").await,
            Err(ManageError::Store(StoreError::NotFound(..)))
        ));
    }
}
