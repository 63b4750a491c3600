//! Native measurement of the Docker storage: `statvfs` percentages and a `du -sx`-style walk.
//! Knows nothing about Docker.
