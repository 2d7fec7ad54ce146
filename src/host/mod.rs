//! Host resources: tap devices, bridges, loop devices and device-mapper.
