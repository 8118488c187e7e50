//! The control protocol between Bulwark's driver and user mode.
#![no_std]
