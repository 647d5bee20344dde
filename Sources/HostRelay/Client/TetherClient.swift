public enum TetherClientPlaceholder {}
