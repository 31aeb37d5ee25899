//! The durable event log (design comment to come with the implementation).
