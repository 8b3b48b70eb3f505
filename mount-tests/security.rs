//! Who may reach a mount and what the mount commands may touch.
