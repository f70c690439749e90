"""Choosing a source: candidate sources in one list, their transferability scores on the target, and the
offline source zoo of the embedded digits target."""
