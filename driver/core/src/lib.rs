//! The platform-neutral core of Bulwark's driver.
#![no_std]
