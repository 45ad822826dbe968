//! Dead letters: records that could not be loaded, with the reason, where,
//! and the raw message, in `etl.dead_letters` (metadata) and
//! `etl.dead_letter_payloads` (the payload, on which PUBLIC has no rights).
//! With `HOST_DEAD_LETTER_KEY` (64 hex digits) payloads are sealed with
//! AES-256-GCM; without it they are stored as they came.
//!
//! Every text a dead letter stores is made storable where the dead letter
//! is made ([`storable`]): PostgreSQL's `text` refuses U+0000, and a reason
//! may quote a key or a value that holds it.
//!
//! Must not log or return a payload; only `replay` opens one.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use sha2::{Digest, Sha256};

/// Why and where a record was refused.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub record_index: i32,
    /// `input`, `transform`, `sink` or `source`.
    pub stage: &'static str,
    pub step: Option<i32>,
    pub plugin: Option<String>,
    pub plugin_digest: Option<String>,
    pub reason: String,
    pub received_count: i32,
}

/// What a dead letter's payload holds (`etl.dead_letter_payloads.form`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PayloadForm {
    /// A message's body, or a row of a file as a record (JSON).
    #[default]
    Record,
    /// A row of a file as the file held it (a CSV record after the file's
    /// header line): replay reads it with the pipeline's format.
    Row,
    /// The start of a row longer than `max_record_bytes`: kept to look at,
    /// never replayed.
    CutRow,
}

impl PayloadForm {
    pub fn as_str(self) -> &'static str {
        match self {
            PayloadForm::Record => "record",
            PayloadForm::Row => "row",
            PayloadForm::CutRow => "cut-row",
        }
    }

    /// From its stored name; `None` for a name this host does not know.
    pub fn parse(name: &str) -> Option<PayloadForm> {
        [PayloadForm::Record, PayloadForm::Row, PayloadForm::CutRow].into_iter().find(|f| f.as_str() == name)
    }
}

/// The most characters of a reason kept (the rest is cut, marked `…`).
pub const MAX_REASON_CHARS: usize = 2_000;

/// `text` as PostgreSQL's `text` takes it and a person reads it on one
/// line: tabs and line breaks become spaces, other control characters
/// (U+0000 among them, which no `text` value may hold) U+FFFD, and past
/// `MAX_REASON_CHARS` characters it is cut.
pub fn storable(text: &str) -> std::borrow::Cow<'_, str> {
    let clean = !text.chars().any(char::is_control) && text.len() <= MAX_REASON_CHARS;
    if clean {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out: String = text
        .chars()
        .take(MAX_REASON_CHARS)
        .map(|c| match c {
            '\t' | '\n' | '\r' => ' ',
            c if c.is_control() => '\u{fffd}',
            c => c,
        })
        .collect();
    if text.chars().nth(MAX_REASON_CHARS).is_some() {
        out.push('…');
    }
    std::borrow::Cow::Owned(out)
}

impl DeadLetter {
    /// A record (or row) that could not be decoded or lacks what it needs.
    pub fn input(reason: String) -> DeadLetter {
        DeadLetter {
            record_index: 0,
            stage: "input",
            step: None,
            plugin: None,
            plugin_digest: None,
            reason: storable(&reason).into_owned(),
            received_count: 1,
        }
    }

    /// A record step `step` (0-based) of the chain rejected.
    pub fn transform(step: usize, plugin: &str, digest: &str, reason: &str, received_count: i32) -> DeadLetter {
        DeadLetter {
            record_index: 0,
            stage: "transform",
            step: Some(step as i32),
            plugin: Some(storable(plugin).into_owned()),
            plugin_digest: Some(digest.to_string()),
            reason: storable(reason).into_owned(),
            received_count,
        }
    }

    /// A message (or object) the source could not take as one, received
    /// `received_count` times.
    pub fn source(reason: String, received_count: u32) -> DeadLetter {
        DeadLetter { stage: "source", received_count: received_count as i32, ..DeadLetter::input(reason) }
    }

    /// A row the database refused: its error code and message (never the
    /// detail, which may quote values).
    pub fn sink(e: &tokio_postgres::Error) -> DeadLetter {
        DeadLetter {
            record_index: 0,
            stage: "sink",
            step: None,
            plugin: None,
            plugin_digest: None,
            reason: storable(&format!("database refused the row: {}", super::refusal(e))).into_owned(),
            received_count: 1,
        }
    }
}

/// Seals payloads with the dead-letter key, and opens them with it or
/// with an earlier one: `HOST_DEAD_LETTER_KEY` is one key, or several
/// separated by commas, the first sealing (rotation: put the new key
/// first, keep the old ones until no payload needs them).
pub struct Sealer {
    /// (key id, cipher), the sealing key first.
    keys: Vec<(String, Aes256Gcm)>,
}

/// What a sealed payload is bound to: its dead letter's id. A payload
/// copied onto another row does not open there.
fn bound_to(dead_letter_id: i64) -> Vec<u8> {
    format!("etl.dead_letter_payloads/{dead_letter_id}").into_bytes()
}

impl Sealer {
    /// From `HOST_DEAD_LETTER_KEY` if set; an ill-formed key is an error.
    pub fn from_env() -> Result<Option<Sealer>, String> {
        match std::env::var("HOST_DEAD_LETTER_KEY") {
            Err(_) => Ok(None),
            Ok(hex) => Sealer::new(&hex).map(Some),
        }
    }

    pub fn new(keys: &str) -> Result<Sealer, String> {
        let keys = keys
            .split(',')
            .enumerate()
            .map(|(i, hex)| {
                let key = ::hex::decode(hex.trim()).ok().filter(|k| k.len() == 32).ok_or_else(|| {
                    format!("HOST_DEAD_LETTER_KEY: key {} must be 64 hex digits (keys are separated by commas)", i + 1)
                })?;
                let key_id = format!("{:x}", Sha256::digest(&key))[..12].to_string();
                let cipher = Aes256Gcm::new_from_slice(&key).map_err(|e| e.to_string())?;
                Ok((key_id, cipher))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Sealer { keys })
    }

    /// The id of the sealing key.
    pub fn key_id(&self) -> &str {
        &self.keys[0].0
    }

    /// Seals `plain` for dead letter `dead_letter_id`: (nonce, sealed).
    fn seal(&self, dead_letter_id: i64, plain: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let nonce: [u8; 12] = rand::random();
        let aad = bound_to(dead_letter_id);
        let sealed = self.keys[0]
            .1
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad: &aad })
            .expect("AES-GCM encryption does not fail");
        (nonce.to_vec(), sealed)
    }

    /// Opens the payload of dead letter `dead_letter_id`, sealed with key
    /// `key_id`; `bound` says whether it was sealed bound to its row
    /// (payloads sealed before that was done are not).
    pub fn open(
        &self,
        dead_letter_id: i64,
        key_id: &str,
        nonce: &[u8],
        sealed: &[u8],
        bound: bool,
    ) -> Result<Vec<u8>, String> {
        let Some((_, cipher)) = self.keys.iter().find(|(id, _)| id == key_id) else {
            let have: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
            return Err(format!(
                "sealed with key {key_id}, which is not among HOST_DEAD_LETTER_KEY's ({})",
                have.join(", ")
            ));
        };
        if nonce.len() != 12 {
            return Err(format!("its nonce is {} bytes, not 12: the stored value is malformed", nonce.len()));
        }
        let aad = if bound { bound_to(dead_letter_id) } else { Vec::new() };
        cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad: &aad })
            .map_err(|_| "the payload does not open: not sealed with this key, for this dead letter, or damaged".into())
    }
}

/// Inserts one dead letter `d` of `unit` and the unit's payload in the
/// open transaction.
pub async fn insert(
    tx: &tokio_postgres::Transaction<'_>,
    pipeline: &str,
    source: &str,
    unit: &super::Unit,
    d: &DeadLetter,
    sealer: Option<&Sealer>,
) -> Result<i64, tokio_postgres::Error> {
    let (message_id, payload) = (&unit.message_id, &unit.payload);
    let id: i64 = tx
        .query_one(
            "INSERT INTO etl.dead_letters \
             (pipeline, source, message_id, record_index, stage, step, plugin, plugin_digest, reason, received_count) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
            &[
                &pipeline,
                &storable(source),
                &storable(message_id),
                &d.record_index,
                &d.stage,
                &d.step,
                &d.plugin.as_deref().map(storable),
                &d.plugin_digest,
                &storable(&d.reason),
                &d.received_count,
            ],
        )
        .await?
        .get(0);
    let (key_id, nonce, body) = match sealer {
        Some(s) => {
            let (nonce, sealed) = s.seal(id, payload);
            (Some(s.key_id().to_string()), Some(nonce), sealed)
        }
        None => (None, None, payload.to_vec()),
    };
    tx.execute(
        "INSERT INTO etl.dead_letter_payloads (dead_letter_id, key_id, nonce, payload, bound, form) \
         VALUES ($1, $2, $3, $4, true, $5)",
        &[&id, &key_id, &nonce, &body, &unit.form.as_str()],
    )
    .await?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_made_storable() {
        assert_eq!(storable("duplicate key `id`"), "duplicate key `id`");
        assert!(matches!(storable("plain"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(storable("key `a\0b`\u{1}\n"), "key `a\u{fffd}b`\u{fffd} ");
        let long = "é".repeat(MAX_REASON_CHARS + 5);
        let cut = storable(&long);
        assert_eq!(cut.chars().count(), MAX_REASON_CHARS + 1);
        assert!(cut.ends_with("é…"));
        assert_eq!(storable(&"x".repeat(MAX_REASON_CHARS)).len(), MAX_REASON_CHARS);
        assert_eq!(DeadLetter::input("a\0".into()).reason, "a\u{fffd}");
    }

    #[test]
    fn payload_forms_round_trip_their_stored_names() {
        for form in [PayloadForm::Record, PayloadForm::Row, PayloadForm::CutRow] {
            assert_eq!(PayloadForm::parse(form.as_str()), Some(form));
        }
        assert_eq!(PayloadForm::parse("other"), None);
        assert_eq!(PayloadForm::default(), PayloadForm::Record);
    }

    #[test]
    fn sealing_round_trips_and_refuses_other_keys() {
        let s = Sealer::new(&"ab".repeat(32)).unwrap();
        let (nonce, sealed) = s.seal(7, b"{\"ip\":\"10.0.0.1\"}");
        assert!(!sealed.windows(8).any(|w| w == b"10.0.0.1"));
        assert_eq!(s.open(7, s.key_id(), &nonce, &sealed, true).unwrap(), b"{\"ip\":\"10.0.0.1\"}");
        let other = Sealer::new(&"cd".repeat(32)).unwrap();
        assert!(other.open(7, s.key_id(), &nonce, &sealed, true).is_err());
        assert!(Sealer::new("abc").is_err());
    }

    #[test]
    fn a_sealed_payload_opens_only_on_its_own_row() {
        let s = Sealer::new(&"ab".repeat(32)).unwrap();
        let (nonce, sealed) = s.seal(7, b"payload");
        let moved = s.open(8, s.key_id(), &nonce, &sealed, true).unwrap_err();
        assert!(moved.contains("for this dead letter"), "{moved}");
    }

    #[test]
    fn a_malformed_sealed_value_is_an_error_not_a_panic() {
        let s = Sealer::new(&"ab".repeat(32)).unwrap();
        let (nonce, sealed) = s.seal(7, b"payload");
        assert!(s.open(7, s.key_id(), &nonce[..5], &sealed, true).unwrap_err().contains("malformed"));
        assert!(s.open(7, s.key_id(), &[], &[], true).is_err());
        assert!(s.open(7, s.key_id(), &nonce, &sealed[..3], true).is_err());
        assert!(s.open(7, s.key_id(), &nonce, &sealed, false).is_err(), "bound, so it needs its row");
    }

    #[test]
    fn keys_rotate_the_first_seals_and_any_opens() {
        let (old, new) = ("ab".repeat(32), "cd".repeat(32));
        let before = Sealer::new(&old).unwrap();
        let (nonce, sealed) = before.seal(7, b"payload");
        let rotated = Sealer::new(&format!("{new}, {old}")).unwrap();
        assert_eq!(rotated.open(7, before.key_id(), &nonce, &sealed, true).unwrap(), b"payload");
        assert_ne!(rotated.key_id(), before.key_id(), "the new key seals");
        let (nonce, sealed) = rotated.seal(9, b"later");
        assert!(before.open(9, rotated.key_id(), &nonce, &sealed, true).unwrap_err().contains("not among"));
        let e = Sealer::new(&format!("{new},xyz")).err().unwrap();
        assert!(e.contains("key 2"), "{e}");
    }
}
