"""text: small text primitives shared by several stages (title normalisation, answer matching,
word n-grams). Pure functions, no I/O, no stage imports."""
