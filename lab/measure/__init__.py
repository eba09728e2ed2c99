"""Measurement: one run carried out and timed, the machine's contention, the calibrated expectation."""
