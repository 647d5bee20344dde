public enum TetherRelayPlaceholder {}
