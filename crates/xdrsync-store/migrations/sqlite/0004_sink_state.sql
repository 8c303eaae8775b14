-- A sink's own recovery state beside its position (e.g. the file sink's "batch being written":
-- file, offset before it, expected length after it, last seq in it). NULL when the sink has
-- nothing in flight.
ALTER TABLE sink_positions ADD COLUMN state TEXT;
