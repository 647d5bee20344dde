/* Spawning a child: fork, set up in the child with async-signal-safe calls only, execve.
 * (Filled in by the guest agent's exec core.) */
#pragma once
