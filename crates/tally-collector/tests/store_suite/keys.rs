//! Keys in the store, against both stores: configured keys recorded once
//! and never revived, creation, rotation with its expiry, revocation, the
//! last admin key kept, and the version every change bumps (what
//! collectors poll).

use super::*;
use tally_collector::keyring::{configured_id, digest};
use tally_collector::store::keys::{KeyChange, KeyKind, KeyOrigin, NewKey};

fn new_key(id: &str, kind: KeyKind, origin: KeyOrigin, secret: &str, at: i64) -> NewKey {
    NewKey {
        id: id.to_owned(),
        kind,
        name: format!("{} key", kind.as_str()),
        origin,
        created_at: at,
        digest: digest(secret),
    }
}

pub(crate) fn keys_rotate_revoke_and_bump_the_version(store: &dyn Store) {
    assert_eq!(store.key_version().unwrap(), 0);
    assert!(store.keys().unwrap().is_empty());
    let admin_id = configured_id(KeyKind::Admin, &digest("configured-admin-token"));
    let configured = [
        new_key(
            &admin_id,
            KeyKind::Admin,
            KeyOrigin::Config,
            "configured-admin-token",
            1_000,
        ),
        new_key(
            &configured_id(KeyKind::Write, &digest("wk-config")),
            KeyKind::Write,
            KeyOrigin::Config,
            "wk-config",
            1_000,
        ),
    ];
    store.record_configured_keys(&configured).unwrap();
    assert_eq!(store.key_version().unwrap(), 1);
    // Recording them again (another collector, a restart) changes nothing.
    store.record_configured_keys(&configured).unwrap();
    assert_eq!(store.key_version().unwrap(), 1);
    let keys = store.keys().unwrap();
    assert_eq!(keys.len(), 2);
    assert!(keys.iter().all(|k| k.origin == KeyOrigin::Config
        && k.secrets.len() == 1
        && k.secrets[0].configured
        && k.secrets[0].expires_at.is_none()));

    // The last admin key is never revoked.
    assert_eq!(
        store.revoke_key(&admin_id, 2_000).unwrap(),
        KeyChange::LastAdmin
    );
    assert_eq!(store.key_version().unwrap(), 1);

    store
        .create_key(&new_key(
            "at_0000000000000001",
            KeyKind::Admin,
            KeyOrigin::Api,
            "api-admin",
            3_000,
        ))
        .unwrap();
    assert_eq!(store.key_version().unwrap(), 2);
    // A taken id is an error, and changes nothing.
    assert!(store
        .create_key(&new_key(
            "at_0000000000000001",
            KeyKind::Admin,
            KeyOrigin::Api,
            "other",
            3_000,
        ))
        .is_err());
    assert_eq!(store.key_version().unwrap(), 2);

    // Rotation: the old secret expires at the end of the grace period.
    let KeyChange::Done(rotated) = store
        .rotate_key(&admin_id, &digest("rotated-admin"), 4_000, 9_000)
        .unwrap()
    else {
        panic!("rotation refused");
    };
    assert_eq!(store.key_version().unwrap(), 3);
    assert_eq!(rotated.secrets.len(), 2);
    assert_eq!(rotated.secrets[0].digest, digest("configured-admin-token"));
    assert_eq!(rotated.secrets[0].expires_at, Some(9_000));
    assert_eq!(rotated.secrets[1].digest, digest("rotated-admin"));
    assert!(!rotated.secrets[1].configured);
    assert_eq!(rotated.secrets[1].expires_at, None);
    // A second rotation shortens, never lengthens, an expiry.
    let KeyChange::Done(again) = store
        .rotate_key(&admin_id, &digest("rotated-twice"), 5_000, 20_000)
        .unwrap()
    else {
        panic!("rotation refused");
    };
    let expiries: Vec<Option<i64>> = again.secrets.iter().map(|s| s.expires_at).collect();
    assert_eq!(expiries, [Some(9_000), Some(20_000), None]);

    // Now another admin key exists: the configured one may go.
    let KeyChange::Done(revoked) = store.revoke_key(&admin_id, 6_000).unwrap() else {
        panic!("revocation refused");
    };
    assert_eq!(revoked.revoked_at, Some(6_000));
    assert_eq!(store.key_version().unwrap(), 5);
    assert_eq!(
        store.revoke_key(&admin_id, 7_000).unwrap(),
        KeyChange::AlreadyRevoked
    );
    assert_eq!(
        store
            .rotate_key(&admin_id, &digest("x"), 7_000, 7_000)
            .unwrap(),
        KeyChange::AlreadyRevoked
    );
    assert_eq!(
        store.revoke_key("wk_missing", 7_000).unwrap(),
        KeyChange::NotFound
    );
    assert_eq!(store.key_version().unwrap(), 5);
    // A restart still configured with the revoked token does not revive it.
    store.record_configured_keys(&configured).unwrap();
    let keys = store.keys().unwrap();
    let admin = keys.iter().find(|k| k.id == admin_id).unwrap();
    assert_eq!(admin.revoked_at, Some(6_000));
    assert_eq!(store.key_version().unwrap(), 5);
    assert_eq!(keys.len(), 3);
}

macro_rules! keys_suite {
    ($fresh:path) => {
        #[test]
        fn keys_rotate_revoke_and_bump_the_version() {
            let (store, _guard) = $fresh();
            crate::keys::keys_rotate_revoke_and_bump_the_version(&*store);
        }
    };
}
