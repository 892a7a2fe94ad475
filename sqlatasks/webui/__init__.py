"""The web dashboard's parts (`sqlatasks.dashboard` assembles them): `views` (GET pages),
`actions` (POSTs, CSRF), `forms`, `html`."""
