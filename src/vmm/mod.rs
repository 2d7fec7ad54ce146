//! Drivers for virtual machine monitors (Firecracker, QEMU).
