-- Retention of dead letters finds the expired ones by receipt time.
CREATE INDEX dead_letters_by_received ON dead_letters (received_at);
