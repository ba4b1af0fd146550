"""Modal forms. Each collects and validates its fields, then calls an ``apply`` callback
(the Controller); a refused or failed apply is shown in the form, which stays open with the
operator's input intact."""
