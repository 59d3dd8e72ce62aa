"""Turn the bytes of a submission email into the fields of a call's form."""
