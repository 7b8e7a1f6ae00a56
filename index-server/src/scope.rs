//! What one viewer may see and download: the scope every path of the index checks (search hits
//! and totals, browse, sources, grants, tickets).
//!
//! Files carry the id of their interned ACL (0 = public) in SQLite and as a fast field of the
//! index. A viewer's scope is two sets of ACL ids, computed once per request (and cached until a
//! membership changes, see `db::accounts`): the ACLs it may download from, and the ones it sees
//! listed (those plus every locked ACL). So a membership change never touches the index.

use crate::db::{AccountRef, AclRef};

/// A set of ACL ids, as a bitmap (ids are small, dense row ids).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclBits(Vec<u64>);

impl AclBits {
    /// Adds an ACL.
    pub fn insert(&mut self, acl: AclRef) {
        let Ok(bit) = usize::try_from(acl.0) else {
            return;
        };
        if self.0.len() <= bit / 64 {
            self.0.resize(bit / 64 + 1, 0);
        }
        self.0[bit / 64] |= 1 << (bit % 64);
    }

    /// Whether the set holds `acl`.
    pub fn contains(&self, acl: AclRef) -> bool {
        usize::try_from(acl.0)
            .ok()
            .and_then(|bit| self.0.get(bit / 64).map(|w| w & (1 << (bit % 64)) != 0))
            .unwrap_or(false)
    }

    /// Whether both hold the same ACLs (however many empty words trail either).
    pub fn same_as(&self, other: &AclBits) -> bool {
        let used = |bits: &[u64]| bits.iter().rposition(|&w| w != 0).map_or(0, |i| i + 1);
        self.0[..used(&self.0)] == other.0[..used(&other.0)]
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }
}

/// What one viewer may see and download.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// The viewer's account (`None`: a guest).
    pub account: Option<AccountRef>,
    download: AclBits,
    listed: AclBits,
}

impl Scope {
    /// A scope from its two sets (every downloadable ACL must also be listed).
    pub fn new(account: Option<AccountRef>, download: AclBits, listed: AclBits) -> Scope {
        Scope {
            account,
            download,
            listed,
        }
    }

    /// The ACLs the viewer sees listed (viewers who see the same share per-segment maps).
    pub fn listed(&self) -> &AclBits {
        &self.listed
    }

    /// A guest's scope on a server with no ACLs: public files only.
    pub fn public_only() -> Scope {
        Scope::default()
    }

    /// Whether a file under `acl` is shown to the viewer (in hits, totals, browse).
    #[inline]
    pub fn lists(&self, acl: AclRef) -> bool {
        acl == AclRef::PUBLIC || self.listed.contains(acl)
    }

    /// Whether the viewer may download a copy under `acl` (be given it as a source).
    #[inline]
    pub fn downloads(&self, acl: AclRef) -> bool {
        acl == AclRef::PUBLIC || self.download.contains(acl)
    }

    /// Whether only public files are visible: the index can skip reading the ACL column.
    pub fn is_public_only(&self) -> bool {
        self.listed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_hold_what_was_inserted_and_nothing_else() {
        let mut bits = AclBits::default();
        for id in [1, 63, 64, 1000] {
            bits.insert(AclRef(id));
        }
        for id in [1, 63, 64, 1000] {
            assert!(bits.contains(AclRef(id)));
        }
        for id in [0, 2, 65, 999, 1001, 1 << 40, -1] {
            assert!(!bits.contains(AclRef(id)), "{id}");
        }
    }

    #[test]
    fn locked_acls_are_listed_but_not_downloadable() {
        let (mut download, mut listed) = (AclBits::default(), AclBits::default());
        download.insert(AclRef(1));
        listed.insert(AclRef(1));
        listed.insert(AclRef(2));
        let scope = Scope::new(None, download, listed);
        assert!(scope.lists(AclRef::PUBLIC) && scope.downloads(AclRef::PUBLIC));
        assert!(scope.lists(AclRef(1)) && scope.downloads(AclRef(1)));
        assert!(scope.lists(AclRef(2)) && !scope.downloads(AclRef(2)));
        assert!(!scope.lists(AclRef(3)) && !scope.downloads(AclRef(3)));
    }
}
