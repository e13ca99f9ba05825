Jobs carry only the user's ``__ac`` cookie or ``Authorization`` header, are
sent when the user's transaction commits (identical jobs once), use JSON
messages only, and may only target the portal's own origin.
