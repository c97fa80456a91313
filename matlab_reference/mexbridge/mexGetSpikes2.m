function varargout = mexGetSpikes2(varargin)
% Octave stand-in for Kilosort2's mexGetSpikes2 mex: pykilosort's kernel through mex_bridge.
varargout = cell(1, max(nargout, 1));
[varargout{:}] = mex_bridge('mexGetSpikes2', nargout, varargin{:});
end
