"""Messaging: localised templates, MIME building with DKIM, transports (SMTP, maildir), the mail catcher,
and (from the outbox side) delivery, consent, suppression and tracking."""
