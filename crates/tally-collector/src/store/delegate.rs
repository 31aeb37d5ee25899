//! What both backends implement alike by delegation: each backend's folder
//! has a module per concern with the same names, so one macro writes the
//! trait impls that only forward to them. Declared before the backends in
//! `store/mod.rs` (`#[macro_use]`), so they can invoke it.

/// `AdminStore` for a backend whose folder has a module per concern with
/// the same names (`installs`, `deletion`, `dead_letters`, `export`): each
/// method is its module's function of the same name. Both backends are
/// laid out alike, so their admin surfaces cannot drift apart.
macro_rules! admin_store_by_concern {
    ($store:ty) => {
        impl $crate::store::AdminStore for $store {
            fn install(
                &self,
                install_id: &str,
            ) -> Result<Option<$crate::store::InstallReport>, $crate::store::StoreError> {
                installs::install(self, install_id)
            }

            fn delete_person(
                &self,
                kind: $crate::store::PersonKind,
                id: &str,
                source: Option<&str>,
                requested_at: i64,
            ) -> Result<$crate::store::DeletionReport, $crate::store::StoreError> {
                match source {
                    Some(source) => deletion::delete_scoped(self, kind, id, source, requested_at),
                    None => deletion::delete_device(self, kind, id, requested_at),
                }
            }

            fn is_deleted(&self, user_id: &str) -> Result<bool, $crate::store::StoreError> {
                deletion::is_deleted(self, user_id)
            }

            fn dead_letters(
                &self,
                q: &$crate::store::DeadLetterQuery,
            ) -> Result<Vec<$crate::store::StoredDeadLetter>, $crate::store::StoreError> {
                dead_letters::dead_letters(self, q)
            }

            fn dead_letter_totals(
                &self,
            ) -> Result<$crate::store::DeadLetterTotals, $crate::store::StoreError> {
                dead_letters::dead_letter_totals(self)
            }

            fn deletions(
                &self,
                limit: usize,
            ) -> Result<Vec<$crate::store::DeletionRecord>, $crate::store::StoreError> {
                deletion::deletions(self, limit)
            }

            fn export_page(
                &self,
                from: i64,
                to: i64,
                source: Option<&str>,
                after: Option<&$crate::store::ExportCursor>,
                limit: usize,
            ) -> Result<Vec<$crate::store::ExportedEvent>, $crate::store::StoreError> {
                export::export_page(self, from, to, source, after, limit)
            }

            fn count_stored(
                &self,
                from: i64,
                to: i64,
                source: Option<&str>,
            ) -> Result<u64, $crate::store::StoreError> {
                export::count_stored(self, from, to, source)
            }

            fn person_page(
                &self,
                kind: $crate::store::PersonKind,
                id: &str,
                source: Option<&str>,
                after: Option<&$crate::store::ExportCursor>,
                limit: usize,
            ) -> Result<Vec<$crate::store::ExportedEvent>, $crate::store::StoreError> {
                export::person_page(self, kind, id, source, after, limit)
            }

            fn install_events(
                &self,
                install_id: &str,
                after_seq: u64,
                limit: usize,
            ) -> Result<Vec<$crate::store::InstallEvent>, $crate::store::StoreError> {
                installs::install_events(self, install_id, after_seq, limit)
            }
        }
    };
}
