//! Case styles: checking a name against one, splitting a name into words,
//! and joining words into identifiers for generated code.

use crate::model::Case;

/// The namespace of Tally's own events (`tally.dropped`, `tally.health`):
/// a plan cannot name them (lint `event-name-reserved`), and the collector
/// never counts them as unplanned.
pub const RESERVED_PREFIX: &str = tally_proto::INTERNAL_EVENT_PREFIX;

/// Whether `name` is in Tally's own namespace ([`RESERVED_PREFIX`]).
///
/// ```
/// use tally_plan::naming::is_reserved;
/// assert!(is_reserved("tally.health"));
/// assert!(!is_reserved("Tally Opened"));
/// ```
pub fn is_reserved(name: &str) -> bool {
    tally_proto::is_internal_event(name)
}

/// Whether `name` is written in `case`.
///
/// ```
/// use tally_plan::{naming::follows, Case};
/// assert!(follows(Case::Title, "Order Completed"));
/// assert!(!follows(Case::Title, "Order completed"));
/// assert!(follows(Case::Snake, "order_completed"));
/// assert!(!follows(Case::Snake, "order__completed"));
/// ```
pub fn follows(case: Case, name: &str) -> bool {
    match case {
        Case::Title => separated(name, ' ', |w| {
            let mut chars = w.chars();
            chars
                .next()
                .is_some_and(|c| c.is_uppercase() || c.is_ascii_digit())
                && w.chars().all(char::is_alphanumeric)
                // A hump (`OrderCompleted`) is two words without their space.
                && !w
                    .chars()
                    .zip(w.chars().skip(1))
                    .any(|(a, b)| a.is_lowercase() && b.is_uppercase())
        }),
        Case::Snake => lower_separated(name, '_'),
        Case::Kebab => lower_separated(name, '-'),
        Case::Camel => joined(name, char::is_lowercase),
        Case::Pascal => joined(name, char::is_uppercase),
    }
}

/// Words separated by exactly one `sep`, each passing `word_ok`.
fn separated(name: &str, sep: char, word_ok: impl Fn(&str) -> bool) -> bool {
    !name.is_empty() && name.split(sep).all(|w| !w.is_empty() && word_ok(w))
}

/// Lower-case words of letters and digits, the first starting with a
/// letter, separated by exactly one `sep`.
fn lower_separated(name: &str, sep: char) -> bool {
    name.chars().next().is_some_and(char::is_lowercase)
        && separated(name, sep, |w| {
            w.chars().all(|c| c.is_lowercase() || c.is_ascii_digit())
        })
}

/// Letters and digits only, the first letter passing `first_ok`.
fn joined(name: &str, first_ok: impl Fn(char) -> bool) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(first_ok) && chars.all(char::is_alphanumeric)
}

/// The words of `name`, split the way `case` writes them; with no case,
/// split at every character that is neither a letter nor a digit and at
/// every lower-to-upper transition.
///
/// ```
/// use tally_plan::{naming::words, Case};
/// assert_eq!(words(Some(Case::Title), "Order Completed"), ["Order", "Completed"]);
/// assert_eq!(words(Some(Case::Camel), "orderCompleted"), ["order", "Completed"]);
/// assert_eq!(words(None, "cart-item_added HTTPCall"), ["cart", "item", "added", "HTTP", "Call"]);
/// ```
pub fn words(case: Option<Case>, name: &str) -> Vec<&str> {
    match case {
        Some(Case::Title) => name.split(' ').collect(),
        Some(Case::Snake) => name.split('_').collect(),
        Some(Case::Kebab) => name.split('-').collect(),
        Some(Case::Camel | Case::Pascal) | None => split_words(name),
    }
}

/// Splits at non-alphanumerics and case transitions (`HTTPCall` is
/// `HTTP`, `Call`; `item2Added` is `item2`, `Added`).
fn split_words(name: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for part in name.split(|c: char| !c.is_alphanumeric()) {
        let chars: Vec<(usize, char)> = part.char_indices().collect();
        let mut start = 0;
        for i in 1..chars.len() {
            let (at, c) = chars[i];
            let prev = chars[i - 1].1;
            let next_lower = chars.get(i + 1).is_some_and(|(_, n)| n.is_lowercase());
            let boundary = c.is_uppercase()
                && (prev.is_lowercase()
                    || prev.is_ascii_digit()
                    || (prev.is_uppercase() && next_lower));
            if boundary {
                out.push(&part[start..at]);
                start = at;
            }
        }
        if start < part.len() {
            out.push(&part[start..]);
        }
    }
    out
}

/// `order_completed` from any name: words lower-cased, joined with `_`.
pub fn snake(name: &str) -> String {
    let parts: Vec<String> = split_words(name).iter().map(|w| w.to_lowercase()).collect();
    parts.join("_")
}

/// `OrderCompleted` from any name.
pub fn pascal(name: &str) -> String {
    split_words(name).iter().map(|w| capitalised(w)).collect()
}

/// `orderCompleted` from any name.
pub fn camel(name: &str) -> String {
    let mut out = String::new();
    for (i, w) in split_words(name).iter().enumerate() {
        if i == 0 {
            out.push_str(&w.to_lowercase());
        } else {
            out.push_str(&capitalised(w));
        }
    }
    out
}

/// `Word` from `word` or `WORD`.
fn capitalised(word: &str) -> String {
    let lower = word.to_lowercase();
    let mut chars = lower.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_case_accepts_its_own_spelling_only() {
        let names = [
            "Order Completed",
            "order_completed",
            "orderCompleted",
            "OrderCompleted",
            "order-completed",
        ];
        let cases = [
            Case::Title,
            Case::Snake,
            Case::Camel,
            Case::Pascal,
            Case::Kebab,
        ];
        for (i, case) in cases.iter().enumerate() {
            for (j, name) in names.iter().enumerate() {
                assert_eq!(follows(*case, name), i == j, "{case:?} {name}");
            }
        }
        assert!(follows(Case::Title, "Step 2 Viewed"));
        assert!(follows(Case::Snake, "step_2_viewed"));
        assert!(!follows(Case::Title, "Order  Completed"));
        assert!(!follows(Case::Title, ""));
        assert!(!follows(Case::Snake, "_order"));
        assert!(!follows(Case::Snake, "2fa_enabled"));
        assert!(!follows(Case::Camel, "order_completed"));
    }

    #[test]
    fn identifiers_from_any_name() {
        assert_eq!(snake("Order Completed"), "order_completed");
        assert_eq!(snake("checkoutStarted"), "checkout_started");
        assert_eq!(pascal("order_completed"), "OrderCompleted");
        assert_eq!(pascal("credit-card"), "CreditCard");
        assert_eq!(camel("Order Completed"), "orderCompleted");
        assert_eq!(camel("HTTPCall made"), "httpCallMade");
        assert_eq!(snake("item2Added"), "item2_added");
    }
}
