//! svcgate control plane.
