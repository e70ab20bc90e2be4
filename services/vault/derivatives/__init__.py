"""Training copies of a recording (issue 18, R241-12): an anonymised derivative whose faces are
blurred and whose audio is removed, made from the sealed original through pipes only.

`engine` is the anonymisation itself (detection, smoothing, blur, re-encoding), independent of the
vault: it reads a URL and hands the encoded MP4 to a sink. What it removes and what it does not is
in docs/anonymisation.md."""
