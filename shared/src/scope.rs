//! Visibility scopes: who may see and who may download a shared file.
//!
//! A scope is written the same way in the agent's configuration and on the wire (a list entry's
//! `visibility`): `public`, `hidden`, `members`, `group:NAME`, `users:[a, b]`, `contacts`, each
//! of the last four optionally prefixed by `locked:`, and plain `locked` (= `locked:members`).
//! An unlocked scope lists the file only to its audience; a locked one lists it (name, size) to
//! everyone who may search and lets only its audience download it. `hidden` files are listed and
//! served to nobody but the sharer's own account.
//!
//! Names are compared by their [`nickname_key`], so the canonical text (what [`Display`] writes
//! and what the index server interns) uses keys and lists users sorted, without repeats.
//!
//! [`Display`]: std::fmt::Display

use std::fmt;
use std::str::FromStr;

use crate::validate::{nickname_key, validate_nickname};

/// Most names in one `users:[…]` scope.
pub const MAX_SCOPE_USERS: usize = 64;

/// Who may see and download a file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Visibility {
    /// Everyone who may search the server (guests too, where the server allows guests).
    #[default]
    Public,
    /// Nobody but the sharer's own account (its other devices).
    Hidden,
    /// An audience, and whether others still see the file listed.
    Scoped {
        /// Listed to everyone, downloadable by the audience only.
        locked: bool,
        /// Who may download it (and, unless locked, who sees it at all).
        audience: Audience,
    },
}

/// The people a scoped file is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Audience {
    /// Anyone signed in to an account on the server (not guests).
    Members,
    /// Members of the server group with this name key.
    Group(String),
    /// These accounts (name keys, sorted, distinct).
    Users(Vec<String>),
    /// The sharer's accepted contacts.
    Contacts,
}

/// Why a scope's text is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// Not one of the known forms.
    #[error(
        "unknown visibility {0:?}; use public, hidden, members, group:NAME, users:[a, b], contacts, or locked[:…]"
    )]
    Unknown(String),
    /// A group or account name that is not a valid name.
    #[error("visibility {text:?}: name {name:?} {reason}")]
    BadName {
        /// The whole scope.
        text: String,
        /// The offending name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `users:[]` names nobody.
    #[error("visibility {0:?} names no users")]
    NoUsers(String),
    /// Too many names in `users:[…]`.
    #[error("visibility {0:?} names more than {MAX_SCOPE_USERS} users")]
    TooManyUsers(String),
}

impl Visibility {
    /// Whether this is the default, public scope.
    pub fn is_public(&self) -> bool {
        *self == Visibility::Public
    }

    /// Whether the file may be listed to viewers outside the audience.
    pub fn listed_to_all(&self) -> bool {
        matches!(
            self,
            Visibility::Public | Visibility::Scoped { locked: true, .. }
        )
    }
}

fn name_key(text: &str, name: &str) -> Result<String, ScopeError> {
    validate_nickname(name).map_err(|e| ScopeError::BadName {
        text: text.to_string(),
        name: name.to_string(),
        reason: e.to_string(),
    })?;
    Ok(nickname_key(name))
}

impl FromStr for Visibility {
    type Err = ScopeError;

    fn from_str(text: &str) -> Result<Self, ScopeError> {
        let trimmed = text.trim();
        let (locked, rest) = match trimmed.strip_prefix("locked") {
            Some("") => (true, "members"),
            Some(rest) if rest.starts_with(':') => (true, &rest[1..]),
            _ => (false, trimmed),
        };
        let audience = match rest {
            "public" if !locked => return Ok(Visibility::Public),
            "hidden" if !locked => return Ok(Visibility::Hidden),
            "members" => Audience::Members,
            "contacts" => Audience::Contacts,
            _ => {
                if let Some(group) = rest.strip_prefix("group:") {
                    Audience::Group(name_key(text, group.trim())?)
                } else if let Some(users) = rest.strip_prefix("users:") {
                    let users = users.trim();
                    let inner = users
                        .strip_prefix('[')
                        .and_then(|u| u.strip_suffix(']'))
                        .unwrap_or(users);
                    let mut keys = inner
                        .split(',')
                        .map(str::trim)
                        .filter(|n| !n.is_empty())
                        .map(|n| name_key(text, n.trim_matches('"')))
                        .collect::<Result<Vec<_>, _>>()?;
                    keys.sort();
                    keys.dedup();
                    if keys.is_empty() {
                        return Err(ScopeError::NoUsers(text.to_string()));
                    }
                    if keys.len() > MAX_SCOPE_USERS {
                        return Err(ScopeError::TooManyUsers(text.to_string()));
                    }
                    Audience::Users(keys)
                } else {
                    return Err(ScopeError::Unknown(text.to_string()));
                }
            }
        };
        Ok(Visibility::Scoped { locked, audience })
    }
}

impl fmt::Display for Visibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (locked, audience) = match self {
            Visibility::Public => return f.write_str("public"),
            Visibility::Hidden => return f.write_str("hidden"),
            Visibility::Scoped { locked, audience } => (*locked, audience),
        };
        if locked {
            f.write_str("locked:")?;
        }
        match audience {
            Audience::Members => f.write_str("members"),
            Audience::Contacts => f.write_str("contacts"),
            Audience::Group(g) => write!(f, "group:{g}"),
            Audience::Users(users) => write!(f, "users:[{}]", users.join(", ")),
        }
    }
}

impl serde::Serialize for Visibility {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Visibility {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Visibility {
        text.parse().unwrap()
    }

    #[test]
    fn every_form_parses_and_prints_canonically() {
        for (text, canonical) in [
            ("public", "public"),
            ("hidden", "hidden"),
            ("members", "members"),
            ("locked", "locked:members"),
            ("group:Lab", "group:lab"),
            ("locked:group:Lab", "locked:group:lab"),
            ("users:[Bob, alice, bob]", "users:[alice, bob]"),
            ("users:alice,bob", "users:[alice, bob]"),
            ("contacts", "contacts"),
            ("locked:contacts", "locked:contacts"),
        ] {
            let v = parse(text);
            assert_eq!(v.to_string(), canonical, "{text}");
            assert_eq!(parse(canonical), v, "{canonical} round trip");
        }
    }

    #[test]
    fn bad_scopes_are_refused_with_the_reason() {
        assert!(matches!(
            "friends".parse::<Visibility>(),
            Err(ScopeError::Unknown(_))
        ));
        assert!(matches!(
            "locked:public".parse::<Visibility>(),
            Err(ScopeError::Unknown(_))
        ));
        assert!(matches!(
            "users:[]".parse::<Visibility>(),
            Err(ScopeError::NoUsers(_))
        ));
        assert!(matches!(
            "group:a b".parse::<Visibility>(),
            Err(ScopeError::BadName { .. })
        ));
        let many = format!(
            "users:[{}]",
            (0..65)
                .map(|i| format!("u{i}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert!(matches!(
            many.parse::<Visibility>(),
            Err(ScopeError::TooManyUsers(_))
        ));
    }

    #[test]
    fn only_public_and_locked_scopes_are_listed_to_all() {
        assert!(parse("public").listed_to_all());
        assert!(parse("locked:group:x").listed_to_all());
        assert!(!parse("group:x").listed_to_all());
        assert!(!parse("hidden").listed_to_all());
    }
}
