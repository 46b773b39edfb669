"""tfshare: signed, end-to-end encrypted information sharing for anti-trafficking task forces."""
