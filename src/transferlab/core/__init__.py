"""The ground floor: errors, config composition, atomic writes, fault injection."""
