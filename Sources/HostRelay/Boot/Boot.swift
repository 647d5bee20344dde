public enum TetherBootPlaceholder {}
