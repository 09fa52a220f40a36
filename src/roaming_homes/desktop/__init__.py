"""The desktop: when to notify (policy), what to say (messages), and the D-Bus client."""
